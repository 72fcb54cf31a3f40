"""What the chaos run checks once everything has settled, from a snapshot: no Django, no servers.

Each check compares what the product says (the history's rows and attempts, its
counters, what Redis still holds) with what happened (the run log every job
writes, the e-mails sent, what the driver accepted and did). A violation names
the job and, where its traces match one, the defect it looks like (`DEFECTS`:
the defects the fault suite and this run found, all mended, docs/faults.md "The
defects the suite found, and what mends them"): a named one has come back.
"""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.fault_servers import Run

#: The defects found and mended (docs/faults.md), by a short key; a violation names one when its traces
#: match it, to tell a defect come back from a new one.
DEFECTS = {
    "horse-kill-retried": "A killed work horse is retried against retry_lost=False",
    "cold-shutdown-late": "A cold shutdown is judged after 60 s, not JOBS_WORKER_DEAD_AFTER",
    "end-on-stream-judged": "A finished job whose end is still on the stream is judged",
    "running-job-lost": "A running job is marked lost when Redis restarts",
    "lost-delayed-runs-early": "A lost delayed job runs at once",
    "progress-fails-job": "A progress report fails the job when Redis blinks",
    "worker-exits-on-redis": "A worker exits when Redis refuses it (as its job ends, between jobs, at start)",
    "hung-enqueue-lands": "A job refused while Redis hangs reaches Redis later",
    # Found by the chaos run (docs/faults.md, "The chaos run").
    "queued-on-no-queue": "A queued job Redis holds on no queue is never judged",
    "stop-kills-worker": "A stop of a job whose horse has ended kills the worker itself",
    "end-lost-reran": "A failure whose end Redis did not take runs again as the same attempt",
}

#: How far a run may start before its due time as reckoned here, the row's `created_at` plus the delay
#: (clocks of one machine). RQ schedules whole seconds (up to 1 s early), and the service reads its clock
#: for the due time before it validates the request's jobs, `created_at` only when it inserts them: on a
#: machine busy with the whole test command that was 0.4 s later (a run 1.4 s "early").
EARLY_TOLERANCE = 2.0
#: A run without a row is put down to the last Redis fault at most this long before it started.
FAULT_WINDOW = 30.0
#: A run's end could not be recorded if Redis was away this long after it, or its process was killed.
RECORD_WINDOW = 5.0
#: Exceptions of Redis's client a job's own work never raises here (the fault types and the built-in
#: ones but `bulk_action` do not use Redis): raised in a job, they come from its progress reports.
REDIS_ERRORS = {"ConnectionError", "TimeoutError", "BusyLoadingError"}

FINISHED, FAILED, RUNNING = "finished", "failed", "running"
CUT_OFF_OUTCOMES = {"failed", "abandoned", "lost", "stopped"}
TERMINAL = {"finished", "failed", "stopped", "canceled", "abandoned", "lost"}


@dataclass(frozen=True)
class Accepted:
    """A job the driver was told was created."""

    id: str
    type: str
    via: str  # services, api, outbox, bulk
    at: float
    delay: float | None = None
    token: str | None = None  # an e-mail's subject says it


@dataclass(frozen=True)
class TypeRules:
    retry_lost: bool
    max_attempts: int


@dataclass(frozen=True)
class DriverEvent:
    at: float
    kind: str
    text: str


@dataclass(frozen=True)
class SelfExit:
    """A process that exited without the driver asking it to."""

    at: float
    name: str
    code: int | None
    tail: str


@dataclass
class JobRun:
    """One run of a job, from its lines in the run log."""

    job_id: str
    attempt: int
    pid: int
    start: float
    ended: str | None = None  # end (returned), fail (raised), None (cut off: killed)
    end: float | None = None
    failure: str = ""
    overlapping: list[int] = field(default_factory=list)


@dataclass
class Snapshot:
    seed: int
    accepted: dict[str, Accepted]
    rolled_back: set[str]
    unanswered: int  # creations whose outcome nobody was told (no answer, a 500, a database error)
    rows: dict[str, dict[str, Any]]
    attempts: dict[str, dict[int, dict[str, Any]]]
    audits: dict[str, list[tuple[str, float]]]  # job id: (action, epoch), in order
    rules: dict[str, TypeRules]
    run_lines: list[Run]
    mails: Counter[str]  # e-mails sent, by the token in their subject
    events: list[DriverEvent]
    self_exits: list[SelfExit]
    counted: dict[tuple[str, str], int]  # stats.status_counts()
    recounted: dict[tuple[str, str], int]  # the rows, counted
    leftovers: dict[str, list[tuple[str, str | None]]]  # place in Redis: (job id, its row's status)
    unfinished: dict[str, tuple[str | None, str | None]]  # job id: its RQ status and where Redis holds it
    killed: dict[int, float]  # pid: when the driver killed it (work horses and workers)
    redis_outages: list[tuple[float, float]]  # Redis down or hung, from when to when (epoch)
    settled: bool


@dataclass(frozen=True)
class Violation:
    check: str
    what: str
    job: str | None = None
    type: str | None = None
    defect: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "what": self.what, "job": self.job, "type": self.type, "defect": self.defect}


#: The checks, in the order they are reported, and what each one promises.
CHECKS = {
    "final": "every accepted job ends in a final status, its row kept",
    "accounted": "no row, and no run, of a job nobody was told was created",
    "runs": "no job runs more often than its type allows (retry_lost=False: never again by itself)",
    "overlap": "never two runs of one job at once",
    "early": "no delayed job runs before its time",
    "history": "every attempt in the history matches what the workers did (the run log)",
    "progress": "a progress report never fails the job",
    "mail": "an e-mail is sent once, and once more per retry asked for",
    "processes": "no worker or scheduler exits by itself",
    "counters": "the status counters equal a recount of the rows",
    "redis": "Redis holds no work for a job whose row is final",
}


def runs_by_job(lines: list[Run]) -> dict[str, list[JobRun]]:
    """Each job's runs, oldest first, from the run log (a run is one process's start line)."""
    runs: dict[str, list[JobRun]] = defaultdict(list)
    open_runs: dict[tuple[str, int], JobRun] = {}
    for line in sorted(lines, key=lambda line: line.at):
        key = (line.job_id, line.pid)
        if line.kind == "start":
            run = JobRun(line.job_id, line.attempt, line.pid, line.at)
            runs[line.job_id].append(run)
            open_runs[key] = run
        elif key in open_runs:
            run = open_runs[key]
            if line.kind == "overlap":
                run.overlapping.append(int(line.extra))
            elif line.kind in ("end", "fail"):
                run.ended, run.end, run.failure = line.kind, line.at, line.extra
                del open_runs[key]
    return runs


def _suspect(error: str) -> str | None:
    """The known defect that runs a job again on its own, going by its earlier attempt's error."""
    if "Work-horse terminated unexpectedly" in error:
        return "horse-kill-retried"
    if "died while running this job" in error:
        return "end-on-stream-judged"
    if "Redis no longer has this job" in error:
        return "running-job-lost"
    return None


def _overlap_suspect(error: str) -> str | None:
    """The known defect that runs a job again while its earlier run goes on."""
    return "running-job-lost" if "Redis no longer has this job" in error else None


def _progress_failure(attempt: dict[str, Any]) -> bool:
    """Failed by a Redis error raised in `report_progress`."""
    return (
        attempt["outcome"] == FAILED
        and "redis.exceptions." in attempt["error"]
        and "report_progress" in (attempt["traceback"] or "")
    )


def check(snap: Snapshot) -> list[Violation]:
    return Judge(snap).violations()


class Judge:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.runs = runs_by_job(snap.run_lines)
        self.removed = {
            job_id for job_id, audits in snap.audits.items() if any(action == "remove" for action, _ in audits)
        }
        self.found: list[Violation] = []

    def add(self, check_name: str, what: str, job_id: str | None = None, defect: str | None = None) -> None:
        row = self.snap.rows.get(job_id or "")
        accepted = self.snap.accepted.get(job_id or "")
        job_type = row["type"] if row else (accepted.type if accepted else None)
        self.found.append(Violation(check_name, what, job_id, job_type, defect))

    def violations(self) -> list[Violation]:
        self.check_final()
        self.check_accounted()
        for job_id, row in self.snap.rows.items():
            self.check_job(job_id, row)
        self.check_processes()
        self.check_counters()
        self.check_redis()
        order = list(CHECKS)
        return sorted(self.found, key=lambda violation: order.index(violation.check))

    # --- the facts a check weighs ---

    def redis_away(self, start: float, end: float) -> bool:
        """Whether Redis was down or hung at some moment from `start` to `end`."""
        return any(down <= end and back >= start for down, back in self.snap.redis_outages)

    def unrecordable(self, run: JobRun) -> bool:
        """Whether the run's end may never have reached Redis: its process was killed, or Redis was away."""
        if run.pid in self.snap.killed:
            return True
        end = run.end if run.end is not None else run.start
        return self.redis_away(end - 0.5, end + RECORD_WINDOW)

    # --- the checks ---

    def check_final(self) -> None:
        for job_id, accepted in self.snap.accepted.items():
            row = self.snap.rows.get(job_id)
            if row is None:
                if job_id not in self.removed:
                    self.add("final", f"accepted ({accepted.via}) but no row in the history", job_id)
            elif row["status"] not in TERMINAL:
                rq_status, place = self.snap.unfinished.get(job_id, (None, None))
                ran_out = "" if self.snap.settled else "; not settled"
                on_no_queue = (
                    row["status"] == "queued" and rq_status == "queued" and not (place or "").startswith("queue")
                )
                self.add(
                    "final",
                    f"left {row['status']} (Redis: {rq_status or 'no job'}, in {place or 'no queue or registry'}"
                    f"{ran_out})",
                    job_id,
                    "queued-on-no-queue" if on_no_queue else None,
                )

    def check_accounted(self) -> None:
        snap = self.snap
        strangers = [job_id for job_id in snap.rows if job_id not in snap.accepted]
        for job_id in strangers:
            if job_id in snap.rolled_back:
                self.add("accounted", "its creating transaction rolled back, yet it has a row", job_id)
        unexplained = len([job_id for job_id in strangers if job_id not in snap.rolled_back])
        if unexplained > snap.unanswered:
            self.add(
                "accounted",
                f"{unexplained} rows of jobs never accepted, more than the {snap.unanswered} creations unanswered",
            )
        for job_id, job_runs in self.runs.items():
            if job_id in snap.rows or job_id in snap.accepted:
                if job_id in self.removed and job_id not in snap.rows:
                    removed_at = max(at for action, at in snap.audits[job_id] if action == "remove")
                    late = [run for run in job_runs if run.start > removed_at]
                    if late:
                        self.add("accounted", f"ran {late[0].start - removed_at:.2f}s after it was removed", job_id)
                continue
            first = job_runs[0].start
            if job_id in snap.rolled_back:
                self.add("accounted", "ran, though its creating transaction rolled back", job_id)
                continue
            fault = _last_fault(snap.events, first, ("restart-redis", "hang-redis", "restart-postgres"))
            defect = "hung-enqueue-lands" if fault and fault.kind in ("restart-redis", "hang-redis") else None
            near = f" ({fault.kind} {first - fault.at:.1f}s before it ran)" if fault else ""
            self.add(
                "accounted", f"ran {len(job_runs)}x without a row: its creator was told it failed{near}", job_id, defect
            )

    def check_job(self, job_id: str, row: dict[str, Any]) -> None:
        job_runs = self.runs.get(job_id, [])
        history = self.snap.attempts.get(job_id, {})
        audits = self.snap.audits.get(job_id, [])
        retries = [at for action, at in audits if action == "retry"]
        self.check_runs(job_id, row, job_runs, history, retries)
        self.check_overlap(job_id, job_runs, history)
        self.check_early(job_id, row, job_runs, audits)
        self.check_history(job_id, row, job_runs, history, [at for action, at in audits if action == "stop"])
        self.check_progress(job_id, row, job_runs, history)
        if row["type"] == "email":
            self.check_mail(job_id, row, retries, history)

    def check_runs(
        self,
        job_id: str,
        row: dict[str, Any],
        job_runs: list[JobRun],
        history: dict[int, dict[str, Any]],
        retries: list[float],
    ) -> None:
        rules = self.snap.rules.get(row["type"])
        if rules is None:
            return
        for number, count in sorted(Counter(run.attempt for run in job_runs).items()):
            if count > 1:
                self.add("runs", f"attempt {number} ran {count} times", job_id, "end-lost-reran")
        in_round = 0
        for index, run in enumerate(job_runs):
            before = job_runs[index - 1] if index else None
            asked = before is not None and any(before.start < at <= run.start for at in retries)
            in_round = 1 if before is None or asked else in_round + 1
            if in_round > rules.max_attempts:
                self.add("runs", f"{in_round} runs in one round, its type allows {rules.max_attempts}", job_id)
            if before is None or asked:
                continue
            earlier = history.get(before.attempt, {})
            error = earlier.get("error", "")
            if before.ended == "end" and earlier.get("outcome") == FINISHED:
                self.add(
                    "runs",
                    f"attempt {run.attempt} ran after attempt {before.attempt} had finished, no retry asked"
                    f"{_quoted(error)}",
                    job_id,
                    _suspect(error),
                )
            elif before.ended != "fail" and not rules.retry_lost:
                how = "returned unrecorded" if before.ended == "end" else "was cut off"
                self.add(
                    "runs",
                    f"attempt {run.attempt} ran by itself after attempt {before.attempt} {how}, "
                    f"though its type never retries lost work{_quoted(error)}",
                    job_id,
                    _suspect(error),
                )

    def check_overlap(self, job_id: str, job_runs: list[JobRun], history: dict[int, dict[str, Any]]) -> None:
        by_pid = {run.pid: run for run in job_runs}
        reported: set[tuple[int, int]] = set()
        for run in job_runs:
            for pid in run.overlapping:
                reported.add((pid, run.pid))
                earlier = by_pid.get(pid)
                error = history.get(earlier.attempt, {}).get("error", "") if earlier else ""
                self.add(
                    "overlap",
                    f"attempt {run.attempt} started while attempt {earlier.attempt if earlier else '?'} "
                    f"(pid {pid}) still ran{_quoted(error)}",
                    job_id,
                    _overlap_suspect(error),
                )
        for first in job_runs:
            if first.end is None:
                continue
            for second in job_runs:
                if first.start < second.start < first.end and (first.pid, second.pid) not in reported:
                    error = history.get(first.attempt, {}).get("error", "")
                    self.add(
                        "overlap",
                        f"attempt {second.attempt} started {first.end - second.start:.2f}s before attempt "
                        f"{first.attempt} ended{_quoted(error)}",
                        job_id,
                        _overlap_suspect(error),
                    )

    def check_early(
        self, job_id: str, row: dict[str, Any], job_runs: list[JobRun], audits: list[tuple[str, float]]
    ) -> None:
        accepted = self.snap.accepted.get(job_id)
        if not job_runs or accepted is None or not accepted.delay:
            return
        first = job_runs[0]
        due = row["created_at"] + accepted.delay
        if first.start >= due - EARLY_TOLERANCE:
            return
        if any(action in ("promote", "retry") and at <= first.start for action, at in audits):
            return
        defect = "lost-delayed-runs-early" if "Redis no longer has this job" in row["error"] else None
        self.add("early", f"ran {due - first.start:.1f}s before it was due{_quoted(row['error'])}", job_id, defect)

    def check_history(
        self,
        job_id: str,
        row: dict[str, Any],
        job_runs: list[JobRun],
        history: dict[int, dict[str, Any]],
        stops: list[float],
    ) -> None:
        returned = {run.attempt for run in job_runs if run.ended == "end"}
        for run in job_runs:
            if history.get(run.attempt, {}).get("outcome") == "stopped" and any(at >= run.start for at in stops):
                # Stopped as asked: a stop that reaches the worker after the function returned, while its
                # horse stores the result (10 MB take a while), still kills the horse: the result is not kept.
                continue
            attempt = history.get(run.attempt)
            if attempt is None:
                self.add(
                    "history", f"attempt {run.attempt} ran (pid {run.pid}), the history has no such attempt", job_id
                )
                continue
            outcome, error = attempt["outcome"], attempt["error"]
            if run.ended == "end" and outcome != FINISHED and not self.unrecordable(run):
                self.add(
                    "history", f"attempt {run.attempt} returned, the history says {outcome}{_quoted(error)}", job_id
                )
            elif run.ended == "fail" and outcome != FAILED and not self.unrecordable(run):
                self.add("history", f"attempt {run.attempt} raised {run.failure}, the history says {outcome}", job_id)
            elif run.ended is None and outcome not in CUT_OFF_OUTCOMES and run.attempt not in returned:
                self.add("history", f"attempt {run.attempt} was cut off, the history says {outcome}", job_id)
        for number, attempt in sorted(history.items()):
            if attempt["outcome"] == FINISHED and number not in returned:
                self.add("history", f"attempt {number} is finished in the history, no run of it returned", job_id)
            if attempt["outcome"] == RUNNING and row["status"] in TERMINAL:
                self.add(
                    "history", f"attempt {number} still running in the history, the job is {row['status']}", job_id
                )
        if history:
            last = history[max(history)]
            if row["attempts"] != max(history):
                self.add("history", f"the row counts {row['attempts']} attempts, the timeline {max(history)}", job_id)
            if row["status"] == FINISHED and last["outcome"] != FINISHED:
                self.add("history", f"the job is finished, its last attempt {last['outcome']}", job_id)
        elif row["status"] == FINISHED:
            self.add("history", "the job is finished without an attempt", job_id)

    def check_progress(
        self, job_id: str, row: dict[str, Any], job_runs: list[JobRun], history: dict[int, dict[str, Any]]
    ) -> None:
        failed = {number for number, attempt in history.items() if _progress_failure(attempt)}
        if row["type"] != "bulk_action":
            failed |= {run.attempt for run in job_runs if run.ended == "fail" and run.failure in REDIS_ERRORS}
        for number in sorted(failed):
            attempt = history.get(number, {})
            raised = next((run.failure for run in job_runs if run.attempt == number and run.ended == "fail"), "")
            self.add(
                "progress",
                f"attempt {number} raised {raised or 'a Redis error'} (Redis away: its progress report); "
                f"the history says {attempt.get('outcome', 'nothing')}{_quoted(attempt.get('error', ''))}",
                job_id,
                "progress-fails-job",
            )

    def check_mail(
        self, job_id: str, row: dict[str, Any], retries: list[float], history: dict[int, dict[str, Any]]
    ) -> None:
        subject = str((row["params"] or {}).get("subject", ""))
        token = subject.split()[-1] if subject.startswith("chaos ") else None
        if token is None:
            return
        sent = self.snap.mails.get(token, 0)
        if sent > 1 + len(retries):
            defect = None
            if any(_progress_failure(attempt) for attempt in history.values()) or any(
                run.ended == "fail" and run.failure in REDIS_ERRORS for run in self.runs.get(job_id, [])
            ):
                defect = "progress-fails-job"
            elif any("Work-horse terminated unexpectedly" in attempt["error"] for attempt in history.values()):
                defect = "horse-kill-retried"
            self.add("mail", f"sent {sent} times, {len(retries)} retries asked for", job_id, defect)
        if row["status"] == FINISHED and sent == 0:
            self.add("mail", "finished without sending its e-mail", job_id)

    def check_processes(self) -> None:
        for exit_ in self.snap.self_exits:
            where = _rq_frame(exit_.tail)
            redis = self.redis_away(exit_.at - FAULT_WINDOW, exit_.at)
            killed = exit_.code == -signal.SIGKILL  # not by the driver: by the worker's own hand
            self.add(
                "processes",
                f"{exit_.name} exited by itself (code {exit_.code}){f' in RQ {where}()' if where else ''}: "
                f"{_last_line(exit_.tail)}",
                None,
                "stop-kills-worker" if killed else "worker-exits-on-redis" if redis else None,
            )

    def check_counters(self) -> None:
        snap = self.snap
        for key in sorted(set(snap.counted) | set(snap.recounted)):
            if snap.counted.get(key, 0) != snap.recounted.get(key, 0):
                queue, status = key
                self.add(
                    "counters",
                    f"{queue}/{status}: counted {snap.counted.get(key, 0)}, rows {snap.recounted.get(key, 0)}",
                )

    def check_redis(self) -> None:
        for place, held in sorted(self.snap.leftovers.items()):
            final = [(job_id, status) for job_id, status in held if status is None or status in TERMINAL]
            if final:
                sample = ", ".join(f"{job_id} ({status or 'no row'})" for job_id, status in final[:3])
                self.add("redis", f"{len(final)} jobs still in {place} though their rows are final or gone: {sample}")


def _last_fault(events: list[DriverEvent], before: float, kinds: tuple[str, ...]) -> DriverEvent | None:
    candidates = [event for event in events if event.kind in kinds and before - FAULT_WINDOW <= event.at <= before]
    return candidates[-1] if candidates else None


def _quoted(error: str) -> str:
    line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return f' ("{line[:160]}")' if line else ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _rq_frame(text: str) -> str:
    """The function of RQ's own code the traceback in `text` last passed through."""
    frames = [line for line in text.splitlines() if "/rq/" in line and line.strip().startswith("File ")]
    return frames[-1].rsplit(" in ", 1)[-1].strip() if frames else ""
