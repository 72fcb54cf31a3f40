from typing import Any

from django.core.management.base import CommandParser

from jobs.management.worker_command import WorkerCommand
from jobs.threads import Threads


class Command(WorkerCommand):
    help = (
        "Run one worker process that runs up to N jobs at once, each in a thread (the threaded worker: "
        "jobs.threads), for queues whose jobs mostly wait on the network (e-mail). SIGTERM lets the "
        "running jobs finish; a second one abandons them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "-c", "--concurrency", type=int, default=4, help="How many jobs run at once, each in a thread (default 4)."
        )
        parser.add_argument(
            "--max-jobs",
            type=int,
            default=None,
            help="Stop after about this many jobs in all (the running ones finish), exit 0: a supervisor starts "
            "the process again.",
        )
        parser.add_argument(
            "--worker-ttl", type=int, default=420, help="RQ's worker TTL: a worker's key lives this long past its beat."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = self.queue_names(options, "concurrency", "max_jobs", "worker_ttl")
        threads = Threads(
            names, concurrency=options["concurrency"], max_jobs=options["max_jobs"], worker_ttl=options["worker_ttl"]
        )
        self.run(threads, options)
