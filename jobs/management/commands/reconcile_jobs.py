from typing import Any

from django.core.management.base import BaseCommand

from jobs.reconcile import reconcile


class Command(BaseCommand):
    help = "Mark jobs whose worker died as abandoned and jobs Redis forgot as lost, retrying them where allowed."

    def handle(self, *args: Any, **options: Any) -> None:
        report = reconcile()
        self.stdout.write(
            f"dispatched {report.dispatched} pending, marked {report.abandoned} abandoned and {report.lost} lost, "
            f"recorded {report.canceled} canceled in Redis"
            + (" (mirror behind: judged nothing)" if report.skipped_mirror_behind else "")
        )
