import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from jobs import retention


class ProgressBar:
    """A progress bar on stderr: redrawn in place on a terminal, a line every tenth of the way otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: OutputWrapper, verb: str):
        self.total = max(total, 1)
        self.stream = stream
        self.verb = verb
        self.live = stream.isatty()
        self.shown_tenth = -1
        self.last_draw = 0.0

    def update(self, result: retention.PruneResult, final: bool = False) -> None:
        done = min(result.examined, self.total)
        tenth = done * 10 // self.total
        now = time.monotonic()
        if self.live:
            if not final and now - self.last_draw < 0.1:
                return
        elif tenth <= self.shown_tenth:
            return
        self.shown_tenth, self.last_draw = tenth, now
        filled = done * self.WIDTH // self.total
        rate = result.deleted / result.seconds if result.seconds else 0.0
        line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done * 100 // self.total:3d}%  "
            f"{done:,}/{self.total:,} examined, {result.deleted:,} {self.verb}, {rate:,.0f} rows/s"
        )
        if self.live:
            self.stream.write("\r" + line + ("\n" if final else ""), ending="")
        else:
            self.stream.write(line)
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Delete the job history past its age (JOBS_RETENTION_*), in short batches, keeping the newest jobs of "
        "every type and schedule; the statistics keep their figures."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Say what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=None, help="Jobs per transaction (JOBS_RETENTION_BATCH).")
        for name, setting in (
            ("finished-days", "FINISHED_DAYS"),
            ("failed-days", "FAILED_DAYS"),
            ("canceled-days", "CANCELED_DAYS"),
            ("keep-last", "KEEP_LAST"),
        ):
            parser.add_argument(f"--{name}", type=int, default=None, help=f"Instead of JOBS_RETENTION_{setting}.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            policy = retention.Policy.from_settings(
                finished_days=options["finished_days"],
                failed_days=options["failed_days"],
                canceled_days=options["canceled_days"],
                keep_last=options["keep_last"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be 1 or more")
        dry = options["dry_run"]
        now = timezone.now()
        self.stdout.write(
            f"{'Dry run: ' if dry else ''}keeping {policy.describe()}; the newest {policy.keep_last} "
            "of each job type and schedule whatever their age."
        )
        total = retention.count_candidates(policy, now)
        self.stderr.style_func = None  # the bar in plain text, not in the colour of errors
        bar = None if options["no_progress"] else ProgressBar(total, self.stderr, "would go" if dry else "deleted")
        result = retention.prune(
            policy=policy,
            now=now,
            batch_size=options["batch_size"],
            dry_run=dry,
            progress=bar.update if bar else None,
        )
        if bar is not None and total:
            bar.update(result, final=True)
        self.stdout.write(self.summary(result))

    @staticmethod
    def summary(result: retention.PruneResult) -> str:
        statuses = ", ".join(f"{status} {n:,}" for status, n in result.by_status.most_common()) or "none"
        lines = []
        if result.dry_run:
            lines.append(f"Would delete {result.deleted:,} jobs ({statuses}) of {result.examined:,} past their age.")
            if result.by_type:
                types = ", ".join(f"{type_} {n:,}" for type_, n in result.by_type.most_common())
                lines.append(f"By type: {types}.")
            if result.oldest and result.newest:
                lines.append(f"They ended from {result.oldest:%Y-%m-%d %H:%M} to {result.newest:%Y-%m-%d %H:%M}.")
        else:
            lines.append(
                f"Deleted {result.deleted:,} jobs ({statuses}) in {result.batches:,} batches, {result.seconds:.1f} s "
                f"({result.rate:,.0f} jobs/s); with them {result.attempts:,} attempts, {result.audits:,} audit "
                f"entries, {result.schedule_runs:,} schedule runs and {result.files:,} files."
            )
            if result.skipped_locked:
                lines.append(
                    f"{result.skipped_locked:,} jobs changed or locked meanwhile were left for the next prune."
                )
            if result.file_errors:
                lines.append(f"{result.file_errors:,} files could not be deleted (see the log).")
            lines.append("The statistics keep their figures: their counters still count the pruned jobs.")
        lines.append(
            f"Kept whatever their age: {result.kept_by_type:,} as the newest of their type, "
            f"{result.kept_by_schedule:,} as the newest of their schedule."
        )
        return "\n".join(lines)
