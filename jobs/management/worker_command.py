"""What `manage.py jobs_pool` and `manage.py jobs_threads` share: their queues, their checks of
options, and how they start (the database connections closed before forking, RQ's log level from
`--verbosity`, the process's exit status from the run)."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from jobs import queues


class Runner(Protocol):
    def start(self, burst: bool = False, logging_level: str = "INFO") -> int: ...


class WorkerCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", help="The queues to serve, highest priority first (default: all).")
        parser.add_argument("--burst", action="store_true", help="Stop once the queues are empty.")

    def queue_names(self, options: dict[str, Any], *at_least_one: str) -> list[str]:
        """The queues asked for (all by default); CommandError for an unknown one or an option below 1."""
        names = options["queues"] or list(queues.QUEUE_NAMES)
        unknown = [name for name in names if name not in queues.QUEUE_NAMES]
        if unknown:
            raise CommandError(f"unknown queue(s) {', '.join(unknown)}; queues are {', '.join(queues.QUEUE_NAMES)}")
        for option in at_least_one:
            if options[option] is not None and options[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1")
        return names

    def run(self, runner: Runner, options: dict[str, Any]) -> None:
        for connection in connections.all():  # never shared with the processes forked next
            connection.close()
        level = {0: "WARNING", 1: "INFO"}.get(options["verbosity"], "DEBUG")
        sys.exit(runner.start(burst=options["burst"], logging_level=level))
