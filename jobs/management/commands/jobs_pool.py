import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from jobs import queues
from jobs.pool import Pool


class Command(BaseCommand):
    help = (
        "Run a pool of N worker processes, each running jobs one after the other without a fork per job "
        "(the pooled worker: jobs.pool). SIGTERM lets the running jobs finish; a second one abandons them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", help="The queues to serve, highest priority first (default: all).")
        parser.add_argument(
            "-n", "--num-workers", type=int, default=2, help="How many worker processes run jobs at once (default 2)."
        )
        parser.add_argument(
            "--max-jobs", type=int, default=None, help="Replace a worker process after this many jobs (± 10 %%)."
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            default=None,
            help="Replace a worker process after a job that leaves it using more than this many MB.",
        )
        parser.add_argument(
            "--worker-ttl", type=int, default=420, help="RQ's worker TTL: an idle worker beats every TTL - 15 s."
        )
        parser.add_argument("--burst", action="store_true", help="Stop once the queues are empty.")

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["queues"] or list(queues.QUEUE_NAMES)
        unknown = [name for name in names if name not in queues.QUEUE_NAMES]
        if unknown:
            raise CommandError(f"unknown queue(s) {', '.join(unknown)}; queues are {', '.join(queues.QUEUE_NAMES)}")
        for option in ("num_workers", "max_jobs", "worker_ttl"):
            if options[option] is not None and options[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1")
        if options["max_memory"] is not None and options["max_memory"] <= 0:
            raise CommandError("--max-memory must be a positive number of MB")
        pool = Pool(
            names,
            num_workers=options["num_workers"],
            max_jobs=options["max_jobs"],
            max_memory_mb=options["max_memory"],
            worker_ttl=options["worker_ttl"],
        )
        for connection in connections.all():  # never shared with the children forked next
            connection.close()
        level = {0: "WARNING", 1: "INFO"}.get(options["verbosity"], "DEBUG")
        sys.exit(pool.start(burst=options["burst"], logging_level=level))
