"""The built-in job types. Importing this package registers them."""

from jobs.tasks import bulk_action, email, example, report

__all__ = ["bulk_action", "email", "example", "report"]
