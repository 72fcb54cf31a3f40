"""All-time totals of ended jobs per queue, type and status (`JobTypeTotal`), for the metrics' counters.

`stats.fold()` adds every `JobRunDelta` row into it from now on, in the same
transaction as into `JobEndHour`; nothing deletes it. This migration fills it
with what ended before:

- every `JobEndHour` row from the second hour those rollups hold (the first one may
  be partial: migration 0007 filled them from an exact point in time);
- the history's finished and failed jobs that ended before that hour (or before the
  oldest run not folded yet, or before now when there are no rollups at all), read
  once, a few thousand rows at a time.

Runs not folded yet are left to `stats.fold()`, which adds them as usual.
"""

import math
from collections import Counter
from datetime import timedelta

from django.db import connection as db_connection
from django.db import migrations, models
from django.db.models import Min
from django.utils import timezone

ENDED = ("finished", "failed")
#: `jobs.stats.bucket` as it is today (a migration keeps its own copy of the code it runs).
BUCKETS_PER_DOUBLING = 4


def _bucket(ms):
    if ms < 1:
        return 0
    return math.floor(BUCKETS_PER_DOUBLING * math.log2(ms)) + 1


def _ms(later, earlier):
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds() * 1000)


class _Total:
    def __init__(self):
        self.count = 0
        self.run_ms_sum = 0
        self.wait_ms_sum = 0
        self.run_hist = Counter()
        self.wait_hist = Counter()

    def add_rollup(self, row):
        self.count += row.count
        self.run_ms_sum += row.run_ms_sum
        self.wait_ms_sum += row.wait_ms_sum
        self.run_hist.update({key: int(value) for key, value in (row.run_hist or {}).items()})
        self.wait_hist.update({key: int(value) for key, value in (row.wait_hist or {}).items()})

    def add_job(self, run_ms, wait_ms):
        self.count += 1
        self.run_ms_sum += max(0, run_ms or 0)
        self.wait_ms_sum += max(0, wait_ms or 0)
        if run_ms is not None:
            self.run_hist[str(_bucket(max(0, run_ms)))] += 1
        if wait_ms is not None:
            self.wait_hist[str(_bucket(max(0, wait_ms)))] += 1


#: PostgreSQL: the history's ended jobs before a time, with their run and wait times (ms, as the
#: triggers of 0007 measure them) and the buckets of those (as `_bucket`: the epsilon keeps an exact
#: power of two in its own bucket), added up per queue, type, status and pair of buckets in one pass.
POSTGRES_BUCKET = "CASE WHEN {0} < 1 THEN 0 ELSE floor(4 * ln({0}::float8) / ln(2.0::float8) + 1e-9)::int + 1 END"
POSTGRES_HISTORY = f"""SELECT queue, type, status,
        {POSTGRES_BUCKET.format("run_ms")}, {POSTGRES_BUCKET.format("wait_ms")}, count(*),
        sum(greatest(0, coalesce(run_ms, 0))), sum(greatest(0, coalesce(wait_ms, 0)))
    FROM (SELECT queue, type, status,
            (EXTRACT(EPOCH FROM (ended_at - started_at)) * 1000)::bigint AS run_ms,
            (EXTRACT(EPOCH FROM (started_at - enqueued_at)) * 1000)::bigint AS wait_ms
        FROM jobs_job WHERE status IN ('finished', 'failed') AND ended_at < %s) ended
    GROUP BY 1, 2, 3, 4, 5"""


def _add_history_in_sql(connection, until, totals):
    """The history's part, added up by PostgreSQL (a million rows in seconds)."""
    with connection.cursor() as cursor:
        cursor.execute(POSTGRES_HISTORY, [until])
        for queue, type_, status, run_bucket, wait_bucket, count, run_ms_sum, wait_ms_sum in cursor.fetchall():
            total = totals.setdefault((queue, type_, status), _Total())
            total.count += count
            total.run_ms_sum += int(run_ms_sum)
            total.wait_ms_sum += int(wait_ms_sum)
            if run_bucket is not None:
                total.run_hist[str(run_bucket)] += count
            if wait_bucket is not None:
                total.wait_hist[str(wait_bucket)] += count


def backfill(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    JobEndHour = apps.get_model("jobs", "JobEndHour")
    JobRunDelta = apps.get_model("jobs", "JobRunDelta")
    JobTypeTotal = apps.get_model("jobs", "JobTypeTotal")
    totals = {}

    first_hour = JobEndHour.objects.aggregate(first=Min("hour"))["first"]
    rollups_from = first_hour + timedelta(hours=1) if first_hour is not None else timezone.now()
    for row in JobEndHour.objects.filter(hour__gte=rollups_from).iterator(chunk_size=2000):
        totals.setdefault((row.queue, row.type, row.status), _Total()).add_rollup(row)

    history_until = rollups_from
    first_unfolded = JobRunDelta.objects.aggregate(first=Min("at"))["first"]
    if first_unfolded is not None:
        history_until = min(history_until, first_unfolded)
    connection = schema_editor.connection if schema_editor is not None else db_connection
    if connection.vendor == "postgresql":
        _add_history_in_sql(connection, history_until, totals)
    else:
        older = Job.objects.filter(status__in=ENDED, ended_at__lt=history_until).values_list(
            "queue", "type", "status", "enqueued_at", "started_at", "ended_at"
        )
        for queue, type_, status, enqueued_at, started_at, ended_at in older.iterator(chunk_size=5000):
            totals.setdefault((queue, type_, status), _Total()).add_job(
                _ms(ended_at, started_at), _ms(started_at, enqueued_at)
            )

    JobTypeTotal.objects.bulk_create(
        [
            JobTypeTotal(
                queue=queue,
                type=type_,
                status=status,
                count=total.count,
                run_ms_sum=total.run_ms_sum,
                run_hist=dict(total.run_hist),
                wait_ms_sum=total.wait_ms_sum,
                wait_hist=dict(total.wait_hist),
            )
            for (queue, type_, status), total in totals.items()
        ],
        batch_size=500,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0011_schedules"),
    ]

    operations = [
        migrations.CreateModel(
            name="JobTypeTotal",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("queue", models.CharField(max_length=50)),
                ("type", models.CharField(max_length=100)),
                ("status", models.CharField(max_length=16)),
                ("count", models.BigIntegerField(default=0)),
                ("run_ms_sum", models.BigIntegerField(default=0)),
                ("run_hist", models.JSONField(default=dict)),
                ("wait_ms_sum", models.BigIntegerField(default=0)),
                ("wait_hist", models.JSONField(default=dict)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("queue", "type", "status"), name="jobtypetotal_unique")
                ],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
