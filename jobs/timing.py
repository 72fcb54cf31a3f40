"""When a schedule is due: cron expressions on the wall clock of a time zone, or fixed intervals.

Pure functions of their arguments (no database, no Redis, no clock), so that the scheduler's
decisions can be tested at any instant.

- **cron**: five fields (minute hour day month weekday), read on the wall clock of the
  schedule's IANA zone. Around a daylight-saving change:
  - a wall time the clocks skip (02:30 on the spring-forward night in Europe/Berlin) runs once,
    an hour later by the new clock (03:30; the instant 02:30 would have been in the old offset);
  - a wall time the clocks show twice (02:30 on the fall-back night) runs once, at its first
    occurrence.
  So "every day at 02:30" runs exactly once on every day of the year. Each instant runs at
  most once: on the spring-forward night an expression firing every few minutes loses the
  runs whose shifted instants fall on ones already due.
- **interval**: every N seconds from the schedule's anchor (its start, or when it was made).

Both honour an optional start and end: nothing is due before the start or after the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

#: A due time later than this when the scheduler reaches it counts as missed (the scheduler
#: was down, or the leader stalled): the schedule's missed-run policy decides.
LATE_AFTER = timedelta(seconds=60)
#: How far back from a moment the last due time is searched (a cron that never matches stops there).
SEARCH_BACK = 5000
RUN_ONCE, SKIP = "once", "skip"


class InvalidTiming(ValueError):
    """A timing that cannot be used; `field` names what is wrong (cron, every, zone, end)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTiming("timezone", f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin") from exc


@dataclass(frozen=True)
class Timing:
    cron: str = ""
    every: int | None = None  # seconds
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    anchor: datetime | None = None  # interval schedules without a start count from here

    def __post_init__(self) -> None:
        if bool(self.cron) == (self.every is not None):
            raise InvalidTiming("cron", "give a cron expression or an interval, one of the two")
        if self.cron:
            if len(self.cron.split()) != 5 or not croniter.is_valid(self.cron):
                raise InvalidTiming(
                    "cron", f"{self.cron!r} is not a cron expression of five fields (minute hour day month weekday)"
                )
        elif self.every is not None and self.every < 1:
            raise InvalidTiming("every", "the interval must be at least one second")
        zone(self.timezone)
        if self.start and self.end and self.end <= self.start:
            raise InvalidTiming("end", "the end must be after the start")

    # --- the two questions the scheduler asks ---

    def next_after(self, moment: datetime) -> datetime | None:
        """The first due instant strictly after `moment` (UTC), or None when the schedule has ended."""
        if self.start and moment < self.start:
            moment = self.start - timedelta(microseconds=1)
        due = self._interval_after(moment) if self.every else self._cron_after(moment)
        if due is not None and self.end and due > self.end:
            return None
        return due

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last due instant at or before `moment` (UTC), or None when none is."""
        if self.end and moment > self.end:
            moment = self.end
        due = self._interval_before(moment) if self.every else self._cron_before(moment)
        if due is not None and self.start and due < self.start:
            return None
        return due

    # --- intervals: plain arithmetic in UTC ---

    def _origin(self) -> datetime:
        origin = self.start or self.anchor
        if origin is None:
            raise InvalidTiming("every", "an interval schedule needs a start or an anchor")
        return origin

    def _interval_after(self, moment: datetime) -> datetime:
        assert self.every is not None
        origin, step = self._origin(), timedelta(seconds=self.every)
        if moment < origin:
            return origin
        return origin + step * ((moment - origin) // step + 1)

    def _interval_before(self, moment: datetime) -> datetime | None:
        assert self.every is not None
        origin, step = self._origin(), timedelta(seconds=self.every)
        if moment < origin:
            return None
        return origin + step * ((moment - origin) // step)

    # --- cron: wall times of the zone, each turned into the instant it stands for ---

    def _instant(self, wall: datetime) -> datetime:
        # fold=0: a time shown twice is its first occurrence; a skipped time is read in the
        # offset before the change (02:30 CET, that is 03:30 CEST).
        return wall.replace(tzinfo=zone(self.timezone), fold=0).astimezone(UTC)

    def _wall(self, moment: datetime) -> datetime:
        return moment.astimezone(zone(self.timezone)).replace(tzinfo=None)

    def _cron_after(self, moment: datetime) -> datetime | None:
        # From an hour before, on the wall clock: a skipped time read in the old offset may be
        # due after `moment` while its wall time is before the wall time `moment` shows.
        walls = croniter(self.cron, self._wall(moment) - timedelta(hours=1))
        for _ in range(SEARCH_BACK):
            due = self._instant(walls.get_next(datetime))
            if due > moment:
                return due
        return None

    def _cron_before(self, moment: datetime) -> datetime | None:
        # From an hour after: the first occurrence of a time shown twice is due before the
        # wall time `moment` shows during the repeated hour.
        walls = croniter(self.cron, self._wall(moment) + timedelta(hours=1, seconds=1))
        for _ in range(SEARCH_BACK):
            due = self._instant(walls.get_prev(datetime))
            if due <= moment:
                return due
        return None


@dataclass(frozen=True)
class Plan:
    """What the scheduler does with a schedule whose next run time has come."""

    run_for: datetime | None  # the due time to run now, or None (skipped, or nothing due)
    next_due: datetime | None  # the due time after it, None when the schedule has ended
    missed: bool  # due times passed without a run (the scheduler was away)


def plan(timing: Timing, next_due: datetime, now: datetime, missed_policy: str) -> Plan:
    """The run to make at `now` for a schedule whose next run time was `next_due`.

    Due times later than `LATE_AFTER` are missed: `once` runs the schedule once for the
    latest of them; `skip` runs nothing for them. A run on time (or one that is late by less)
    is always made, once, for the latest due time.
    """
    latest = timing.latest_at_or_before(now)
    if latest is None or latest < next_due:
        return Plan(None, next_due, False)  # not due yet
    missed = latest > next_due or now - latest > LATE_AFTER
    on_time = now - latest <= LATE_AFTER
    run_for = latest if on_time or missed_policy == RUN_ONCE else None
    return Plan(run_for, timing.next_after(latest), missed)
