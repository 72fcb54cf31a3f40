"""Tests of the pages in a real browser: headless Chromium driven by Playwright (marked `browser`)."""
