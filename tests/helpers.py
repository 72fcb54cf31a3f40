"""Helpers shared by the tests: users with permissions, and history rows set as the mirror would."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from jobs import queues, registry, rqcompat, rqstore, services
from jobs.models import Job
from jobs.statuses import JobStatus
from tests.fault_servers import closed_port as closed_port  # one definition: needed before Django is set up

VIEWERS, OPERATORS = "Job viewers", "Job operators"
#: RQ's fork per job, for `manage.py rqworker --worker-class` (its default is the pool).
FORKING = "jobs.worker.Worker"


class QuickPasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 with one iteration: the tests' users log in with passwords, and the strength of the hash
    is not under test (a million iterations cost a third of a CPU second per user). Its hashes say
    `pbkdf2_sha256$1$...`, so a server the tests start, with the default hashers, checks them too."""

    iterations = 1


def make_user(username: str, *, groups: tuple[str, ...] = (), perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password=f"{username}-password")
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    found = Permission.objects.filter(content_type__app_label="jobs", codename__in=perms)
    assert found.count() == len(perms), perms
    user.user_permissions.add(*found)
    return user


def history_row(status: str, *, type: str = "example", queue: str = "default", **fields: Any) -> Job:
    """A job that exists only in the history: Redis has already forgotten it (its TTL ran out)."""
    spec = registry.get(type)
    return Job.objects.create(
        type=type,
        queue=queue,
        params=spec.validate(fields.pop("params", {})),
        status=status,
        timeout=spec.timeout,
        max_attempts=spec.retry.max_attempts,
        **fields,
    )


def put(job: Job, status: str, **fields: Any) -> Job:
    """Set a row's status as the mirror would after a worker reported it."""
    Job.objects.filter(pk=job.pk).update(status=status, **fields)
    job.refresh_from_db()
    return job


def forget_redis_connections() -> None:
    """Make the product connect afresh, with whatever the Redis settings say now."""
    queues.reset()


@contextmanager
def redis_at(port: int, *, cache_too: bool = False) -> Iterator[None]:
    """Every queue's Redis connection (and the cache, if asked) goes to another port of this machine.

    Only the address changes: every other option (timeouts, db) stays as configured.
    """

    def moved_url(url: Any) -> str:
        return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{port}"))

    def moved(config: dict[str, Any]) -> dict[str, Any]:
        if "URL" in config:
            return {**config, "URL": moved_url(config["URL"])}
        return {**config, "HOST": "127.0.0.1", "PORT": port}

    overrides: dict[str, Any] = {"RQ_QUEUES": {name: moved(config) for name, config in settings.RQ_QUEUES.items()}}
    if cache_too:
        cache = settings.CACHES["default"]
        overrides["CACHES"] = {"default": {**cache, "LOCATION": moved_url(cache["LOCATION"])}}
    forget_redis_connections()
    try:
        with override_settings(**overrides):
            yield
    finally:
        forget_redis_connections()


def one_job_in_each_state(user: User) -> SimpleNamespace:
    """A job in each state an action cares about."""
    now = timezone.now()
    return SimpleNamespace(
        queued=services.job_enqueue(type="example", user=user),
        scheduled=services.job_enqueue(type="example", delay_seconds=600, user=user),
        failed=history_row(JobStatus.FAILED, attempts=3, error="RuntimeError: boom", ended_at=now),
        finished=history_row(JobStatus.FINISHED, attempts=1, ended_at=now),
        started=history_row(JobStatus.STARTED, attempts=1, started_at=now),
    )


def started_entries(job: Job) -> list[str]:
    """The members of its queue's started registry that name the job (`<job id>:<execution id>`):
    none once its run has ended, or RQ later fails it as abandoned."""
    return rqstore.executions_of(queues.get_queue(job.queue), [job.rq_id])


def forget_execution_hashes(*jobs: Job) -> None:
    """Delete the hashes of the jobs' executions, as Redis does `timeout + 60` seconds after a start,
    while their entries stay in the started registry."""
    conn = queues.redis()
    for job in jobs:
        for member in started_entries(job):
            conn.delete(rqcompat.execution_key(member))


def liveness(*args: str, threshold: str | None = None) -> tuple[int, str]:
    """`manage.py jobs_alive *args`'s exit code and line, run in this process: the tests poll it, and a
    process of its own costs a second of CPU (tests/test_deploy.py also runs the real command)."""
    out = io.StringIO()
    with override_settings(**({"JOBS_ALIVE_THRESHOLD": threshold} if threshold else {})):
        try:
            call_command("jobs_alive", *args, stdout=out)
            code = 0
        except SystemExit as exit:
            code = int(exit.code or 0)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, out.getvalue()
    return code, lines[0]
