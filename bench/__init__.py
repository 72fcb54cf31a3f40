"""Benchmarks of the product (not shipped with it). See bench/README.md."""
