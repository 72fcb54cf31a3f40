"""The enqueuing and counting side of `bench/workers.py`: one process per system and database.

    python -m bench.peers.agent product|rq|celery|djangoq

driven over stdin/stdout, one JSON object per line each way:

    {"op": "hello"}                      the database vendor it counts in ("redis" for bare RQ)
    {"op": "reset"}                      empty the result store (the product: every table of the jobs app)
    {"op": "enqueue", "kind": K, "n": N} N jobs of kind noop|cpu5 through the system's own API; the seconds it took
    {"op": "count"}                      {"done": finished jobs, "failed": failed jobs} in the result store
    {"op": "latency", "m": M, "gap": S}  M stamp jobs one at a time on idle workers: enqueue -> the job's first line
    {"op": "quit"}

The result stores it counts: the product's history (`Job` rows `finished`), RQ's finished registry
(bare RQ writes no history), django-celery-results' `TaskResult` (`SUCCESS`), django-q2's `Task`
table (`success`, the rows of `Success`). The product and the peers run in different venvs: this
module imports only what the system named on its command line needs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

QUEUE = "default"
JSON_SERIALIZER = "rq.serializers.JSONSerializer"
CHUNK = 1000


class System:
    vendor = "redis"

    def reset(self) -> None:
        raise NotImplementedError

    def enqueue(self, kind: str, n: int) -> None:
        raise NotImplementedError

    def enqueue_stamp(self, token: str) -> None:
        raise NotImplementedError

    def count(self) -> tuple[int, int]:
        raise NotImplementedError


def _django(settings_module: str) -> str:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    from django.db import connection

    return connection.vendor


def _counts(rows: Any, done: dict[str, Any], failed: dict[str, Any]) -> tuple[int, int]:
    """(done, failed) rows in one query."""
    from django.db.models import Count, Q

    counts = rows.aggregate(done=Count("pk", filter=Q(**done)), failed=Count("pk", filter=Q(**failed)))
    return int(counts["done"]), int(counts["failed"])


class Product(System):
    def __init__(self) -> None:
        self.vendor = _django("queueproject.settings")
        from jobs.models import Job
        from jobs.services import JobRequest, job_enqueue, jobs_enqueue
        from jobs.statuses import JobStatus

        self.Job, self.JobRequest, self.job_enqueue, self.jobs_enqueue = Job, JobRequest, job_enqueue, jobs_enqueue
        self.finished, self.failed = JobStatus.FINISHED, JobStatus.FAILED

    def reset(self) -> None:
        from bench.agent import reset

        reset()

    def enqueue(self, kind: str, n: int) -> None:
        for start in range(0, n, CHUNK):
            self.jobs_enqueue(requests=[self.JobRequest(type=f"bench_{kind}") for _ in range(min(CHUNK, n - start))])

    def enqueue_stamp(self, token: str) -> None:
        self.job_enqueue(type="bench_stamp", params={"token": token})

    def count(self) -> tuple[int, int]:
        return _counts(self.Job.objects.all(), {"status": self.finished}, {"status": self.failed})


class BareRQ(System):
    def __init__(self) -> None:
        import redis
        from rq import Queue
        from rq.registry import FailedJobRegistry, FinishedJobRegistry
        from rq.serializers import JSONSerializer

        self.redis = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        self.Queue = Queue
        self.queue = Queue(QUEUE, connection=self.redis, serializer=JSONSerializer)
        self.finished_key = FinishedJobRegistry(QUEUE, connection=self.redis).key
        self.failed_key = FailedJobRegistry(QUEUE, connection=self.redis).key

    def reset(self) -> None:
        self.redis.delete(self.finished_key, self.failed_key)

    def enqueue(self, kind: str, n: int) -> None:
        for start in range(0, n, CHUNK):
            func = f"bench.peers.common.{kind}"
            self.queue.enqueue_many([self.Queue.prepare_data(func) for _ in range(min(CHUNK, n - start))])

    def enqueue_stamp(self, token: str) -> None:
        self.queue.enqueue("bench.peers.common.stamp", token)

    def count(self) -> tuple[int, int]:
        # Counted, not `registry.count` (which runs RQ's clean-up on every call).
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.finished_key)
            pipe.zcard(self.failed_key)
            done, failed = pipe.execute()
        return int(done), int(failed)


class Celery(System):
    def __init__(self) -> None:
        self.vendor = _django("bench.peers.celery_settings")
        from django_celery_results.models import TaskResult

        from bench.peers import celery_app

        self.tasks = {"noop": celery_app.noop, "cpu5": celery_app.cpu5, "stamp": celery_app.stamp}
        self.TaskResult = TaskResult

    def reset(self) -> None:
        self.TaskResult.objects.all().delete()

    def enqueue(self, kind: str, n: int) -> None:
        # One producer for the whole batch (Celery's documented `producer` argument), as a busy client holds one.
        task = self.tasks[kind]
        with task.app.producer_or_acquire() as producer:
            for _ in range(n):
                task.apply_async(producer=producer)

    def enqueue_stamp(self, token: str) -> None:
        self.tasks["stamp"].delay(token)

    def count(self) -> tuple[int, int]:
        return _counts(self.TaskResult.objects.all(), {"status": "SUCCESS"}, {"status": "FAILURE"})


class DjangoQ(System):
    def __init__(self) -> None:
        self.vendor = _django("bench.peers.djangoq_settings")
        from django_q.brokers import get_broker
        from django_q.models import Task
        from django_q.tasks import async_task

        self.Task, self.async_task = Task, async_task
        # One broker (one Redis connection) for every call, through async_task's documented `broker`
        # argument: without it each call makes a broker of its own (about 4 ms here).
        self.broker = get_broker()

    def reset(self) -> None:
        self.Task.objects.all().delete()

    def enqueue(self, kind: str, n: int) -> None:
        func = f"bench.peers.common.{kind}"
        for _ in range(n):
            self.async_task(func, broker=self.broker)

    def enqueue_stamp(self, token: str) -> None:
        self.async_task("bench.peers.common.stamp", token, broker=self.broker)

    def count(self) -> tuple[int, int]:
        return _counts(self.Task.objects.all(), {"success": True}, {"success": False})


SYSTEMS: dict[str, Callable[[], System]] = {"product": Product, "rq": BareRQ, "celery": Celery, "djangoq": DjangoQ}


def latency(system: System, m: int, gap: float, timeout: float = 30.0) -> dict[str, Any]:
    """M stamp jobs, one at a time, each enqueued once the previous one is done and the workers idle."""
    import redis

    from bench.peers.common import STAMP_PREFIX

    stamps = redis.Redis.from_url(os.environ["BENCH_STAMP_REDIS_URL"])
    latencies_ms: list[float] = []
    enqueue_ms: list[float] = []
    for _ in range(m):
        before, _failed = system.count()
        token = uuid.uuid4().hex
        enqueued = time.time()
        system.enqueue_stamp(token)
        enqueue_ms.append((time.time() - enqueued) * 1000)
        reply: Any = stamps.blpop([STAMP_PREFIX + token], timeout=timeout)
        if reply is None:
            raise RuntimeError(f"a stamp job did not start within {timeout}s")
        latencies_ms.append((float(reply[1]) - enqueued) * 1000)
        deadline = time.monotonic() + timeout
        while system.count()[0] <= before:  # the job's end recorded: the worker is idle again
            if time.monotonic() > deadline:
                raise RuntimeError(f"a stamp job was not recorded done within {timeout}s")
            time.sleep(0.002)
        time.sleep(gap)
    return {"latencies_ms": latencies_ms, "enqueue_ms": enqueue_ms}


def handle(system: System, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "hello":
        return {"vendor": system.vendor, "pid": os.getpid()}
    if op == "reset":
        system.reset()
        return {}
    if op == "enqueue":
        began = time.perf_counter()
        system.enqueue(str(request["kind"]), int(request["n"]))
        return {"seconds": time.perf_counter() - began}
    if op == "count":
        done, failed = system.count()
        return {"done": done, "failed": failed}
    if op == "latency":
        return latency(system, int(request["m"]), float(request.get("gap", 0.05)))
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    name = sys.argv[1]
    system = SYSTEMS[name]()
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            reply: dict[str, Any] = {"ok": True, **handle(system, request)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
