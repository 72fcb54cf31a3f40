from typing import Any

from django.core.management.base import CommandError, CommandParser
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL

from jobs.management.worker_command import WorkerCommand
from jobs.pool import DEFAULT_WORKER_TTL, Pool


class Command(WorkerCommand):
    help = (
        "Run a pool of N worker processes, each running jobs one after the other without a fork per job "
        "(the pooled worker: jobs.pool). SIGTERM lets the running jobs finish; a second one abandons them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
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
            "--worker-ttl",
            type=int,
            default=DEFAULT_WORKER_TTL,
            help="RQ's worker TTL: an idle worker beats every TTL - 15 s.",
        )
        parser.add_argument(
            "--job-monitoring-interval",
            type=float,
            default=DEFAULT_JOB_MONITORING_INTERVAL,
            help="The pool beats for each busy worker process every this many seconds "
            f"(default {DEFAULT_JOB_MONITORING_INTERVAL}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = self.queue_names(options, "num_workers", "max_jobs", "worker_ttl", "job_monitoring_interval")
        if options["max_memory"] is not None and options["max_memory"] <= 0:
            raise CommandError("--max-memory must be a positive number of MB")
        pool = Pool(
            names,
            num_workers=options["num_workers"],
            max_jobs=options["max_jobs"],
            max_memory_mb=options["max_memory"],
            worker_ttl=options["worker_ttl"],
            job_monitoring_interval=options["job_monitoring_interval"],
        )
        self.run(pool, options)
