"""The built-in job types. Importing this package registers them."""

from jobs.tasks import email, example, report

__all__ = ["email", "example", "report"]
