import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.scheduler import Scheduler
from jobs.signals import stop_on_signal


class Command(BaseCommand):
    help = "Run the scheduler: promotes delayed jobs and retries when due, runs schedules, reconciles, mirrors events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tick",
            type=float,
            default=1.0,
            help="The most seconds between two rounds (default 1); a round also starts when a schedule or a "
            "delayed job is due.",
        )
        parser.add_argument(
            "--reconcile-every", type=float, default=None, help="Seconds between reconciler runs (default: setting)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scheduler = Scheduler(tick=options["tick"], reconcile_every=options["reconcile_every"])

        stop = stop_on_signal(scheduler.stop_requested)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        scheduler.run()
