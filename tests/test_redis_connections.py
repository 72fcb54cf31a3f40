"""Redis with a password, over TLS (rediss://) and through Sentinel: every connection follows the settings.

Real servers, started here once per module: a redis-server with `--requirepass` that also listens
with TLS (a CA and a server certificate made with openssl), and a Sentinel (`redis-server
--sentinel`) watching a master of its own. The test process points its settings at one of them
(as REDIS_URL / REDIS_SENTINELS would), worker processes get the same variables, and a job goes
through: enqueued here, run by the worker, mirrored into the history.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from jobs import queues, redis_config, services
from jobs.models import Job
from jobs.scheduler import LOCK_KEY
from jobs.statuses import JobStatus
from tests.conftest import wait_for
from tests.helpers import FORKING, OPERATORS, make_user

pytestmark = [
    pytest.mark.slow,
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

PASSWORD = "s3cret-redis-pw"
SENTINEL_PASSWORD = "s3ntinel-pw"
DB = 1


def free_port(taken: set[int]) -> int:
    """A port the system says is free (two test passes run at once: a fixed one could be taken)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            chosen: int = probe.getsockname()[1]
        if chosen not in taken:
            taken.add(chosen)
            return chosen


class Server:
    """A redis-server (or Sentinel) process of this module's, stopped at the end."""

    def __init__(self, directory: Path, *args: str, ping: dict[str, Any]) -> None:
        self.directory = directory
        self.log = directory / "server.log"
        self.process = subprocess.Popen(
            ["redis-server", *args, "--logfile", str(self.log)],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited: {self.log.read_text() if self.log.exists() else ''}")
            try:
                info: Any = redis_lib.Redis(**ping, socket_timeout=1, socket_connect_timeout=1).info("server")
            except redis_lib.RedisError:
                return False
            # This test's own server, not another one that took the port meanwhile.
            return bool(info["process_id"] == self.process.pid)

        wait_for(answers, 15, interval=0.05, message=f"redis-server {args[:2]} to answer")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A redis-server with a password, on a plain port and on a TLS port (certificate for 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    directory = tmp_path_factory.mktemp("tls-redis")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=directory)  # fmt: skip
    taken: set[int] = set()
    port, tls_port = free_port(taken), free_port(taken)
    server = Server(
        directory,
        "--port", str(port), "--tls-port", str(tls_port), "--bind", "127.0.0.1",
        "--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
        "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
        ping={"port": port, "password": PASSWORD},
    )  # fmt: skip
    try:
        yield {
            "url": f"redis://:{PASSWORD}@127.0.0.1:{port}/{DB}",
            "wrong_url": f"redis://:not-the-password@127.0.0.1:{port}/{DB}",
            "tls_url": f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/{DB}?ssl_ca_certs={directory / 'ca.pem'}",
            "untrusted_tls_url": f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/{DB}",
            "client": redis_lib.Redis(port=port, password=PASSWORD, db=DB, socket_timeout=5),
        }
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A master with a password and one Sentinel (itself with a password) watching it as `jobs-master`."""
    directory = tmp_path_factory.mktemp("sentinel")
    taken: set[int] = set()
    master_port, sentinel_port = free_port(taken), free_port(taken)
    master = Server(
        directory,
        "--port", str(master_port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
        "--save", "", "--appendonly", "no",
        ping={"port": master_port, "password": PASSWORD},
    )  # fmt: skip
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {directory}\nrequirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor jobs-master 127.0.0.1 {master_port} 1\n"
        f"sentinel auth-pass jobs-master {PASSWORD}\n"
    )
    watcher = Server(directory, str(config), "--sentinel", ping={"port": sentinel_port, "password": SENTINEL_PASSWORD})
    try:
        wait_for(
            lambda: redis_lib.Redis(port=sentinel_port, password=SENTINEL_PASSWORD).execute_command(
                "SENTINEL", "get-master-addr-by-name", "jobs-master"
            ),
            15,
            message="the Sentinel to know its master",
        )
        yield {
            "env": {
                "REDIS_URL": f"redis://:{PASSWORD}@sentinel-knows-the-host:1/{DB}",
                "REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}",
                "REDIS_SENTINEL_MASTER": "jobs-master",
                "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            },
            "client": redis_lib.Redis(port=master_port, password=PASSWORD, db=DB, socket_timeout=5),
        }
    finally:
        watcher.stop()
        master.stop()


@contextmanager
def product_redis(env: dict[str, str]) -> Iterator[None]:
    """This process connects as a process started with `env` would (REDIS_URL, REDIS_SENTINELS...)."""
    sentinels = redis_config.parse_sentinels(env.get("REDIS_SENTINELS", ""))
    connection = redis_config.rq_connection(
        env["REDIS_URL"],
        socket_timeout=2.0,
        sentinels=sentinels,
        master=env.get("REDIS_SENTINEL_MASTER", "mymaster"),
        sentinel_password=env.get("REDIS_SENTINEL_PASSWORD", ""),
    )
    rq_queues = {
        name: {**connection, "DEFAULT_TIMEOUT": config["DEFAULT_TIMEOUT"], "SERIALIZER": config["SERIALIZER"]}
        for name, config in settings.RQ_QUEUES.items()
    }
    queues.reset()
    try:
        with override_settings(RQ_QUEUES=rq_queues, REDIS_URL=env["REDIS_URL"]):
            yield
    finally:
        queues.reset()


def run_a_job_through(processes: Any, env: dict[str, str], server: redis_lib.Redis) -> None:
    """A job enqueued here runs in a worker process started with `env`, and reaches the history."""
    server.flushdb()
    with product_redis(env):
        processes.worker("default", **env)
        job = services.job_enqueue(type="example", params={"duration": 0, "steps": 1, "message": "over"})
        assert server.exists(f"rq:job:{job.id}"), "the job is not on the server the settings name"
        wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.FINISHED, 30, message="the job to finish")
        job.refresh_from_db()
        assert job.result is not None
        # The cache (API throttling) and the Jobs page's asyncio reader connect the same way.
        cache.set("connection-check", "yes", 30)
        assert cache.get("connection-check") == "yes"
        assert server.exists("cache:1:connection-check")
        assert asyncio.run(_async_ping())


async def _async_ping() -> bool:
    client = redis_config.async_client(settings.RQ_QUEUES[queues.DEFAULT], socket_timeout=2)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


@pytest.fixture
def operator_api() -> APIClient:
    client = APIClient()
    client.force_authenticate(make_user("operator", groups=(OPERATORS,)))
    return client


def test_a_job_runs_end_to_end_on_a_redis_with_a_password(processes, tls_redis, operator_api, client):
    env = {"REDIS_URL": tls_redis["url"]}
    run_a_job_through(processes, env, tls_redis["client"])
    with product_redis(env):
        response = operator_api.post("/api/jobs", {"type": "example", "params": {"duration": 0}}, format="json")
        assert response.status_code == 201, response.content
        job_id = response.json()["id"]
        wait_for(lambda: operator_api.get(f"/api/jobs/{job_id}").json()["status"] == "finished", 30)
        assert client.get("/readyz").json()["checks"]["redis"]["ok"] is True


def test_a_wrong_password_is_a_clear_503_and_a_clear_worker_log(processes, tls_redis, operator_api, client):
    env = {"REDIS_URL": tls_redis["wrong_url"]}
    with product_redis(env):
        response = operator_api.post("/api/jobs", {"type": "example"}, format="json")
        assert response.status_code == 503
        assert response.json()["detail"] == "The job queue is unavailable; try again shortly."
        readyz = client.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["checks"]["redis"]["reason"] == "authentication failed"
    worker = processes.start("rqworker", "default", "--worker-class", FORKING, **env)
    processes.wait_until_logged(worker, "invalid username-password pair", "the worker to report the wrong password")
    assert Job.objects.count() == 0


def test_a_job_runs_end_to_end_over_tls(processes, tls_redis):
    run_a_job_through(processes, {"REDIS_URL": tls_redis["tls_url"]}, tls_redis["client"])


def test_tls_refuses_a_server_whose_certificate_it_cannot_verify(tls_redis, client):
    with product_redis({"REDIS_URL": tls_redis["untrusted_tls_url"]}):
        with pytest.raises(redis_lib.ConnectionError, match="certificate verify failed"):
            queues.redis().ping()
        assert client.get("/readyz").status_code == 503


def test_a_job_runs_end_to_end_through_sentinel(processes, sentinel):
    run_a_job_through(processes, sentinel["env"], sentinel["client"])
    # An idle worker stops at once on SIGTERM (a connection interrupted inside BLPOP is dropped).
    worker = processes.started[0][0]
    started = time.monotonic()
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_the_scheduler_runs_through_sentinel(processes, sentinel):
    """The scheduler's lock and its mirror connect through the Sentinel too: a delayed job is promoted and run."""
    env = sentinel["env"]
    sentinel["client"].flushdb()
    with product_redis(env):
        processes.worker("default", **env)
        processes.scheduler(**env)
        job = services.job_enqueue(type="example", params={"duration": 0, "steps": 1}, delay_seconds=1)
        wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.FINISHED, 30, message="the delayed job")
        assert (sentinel["client"].get(LOCK_KEY) or b"").startswith(b"scheduler:"), "the lock is not on the master"
