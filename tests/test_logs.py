"""Logs: one JSON line per event with the job's id and type (LOG_FORMAT=json), plain text by default.

What is checked is what someone following one job through the logs sees: every line that names the
job, in the web's, the worker's (work horse included) and the scheduler's logs, carries its id and
type as fields, so `grep <id>` and `jq 'select(.job_id == "<id>")'` find the same lines.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs import logs, services
from jobs.models import Job, ScheduleRun
from jobs.statuses import JobStatus
from tests.conftest import BASE_DIR, Processes, wait_for
from tests.helpers import OPERATORS, history_row, make_user

QUICK = {"duration": 0.2, "steps": 2}


def json_lines(text: str, where: str) -> list[dict[str, Any]]:
    """Every line of a log as JSON (a line that is not fails the test, named)."""
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} of the {where}'s log is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        parsed.append(entry)
    assert parsed, f"the {where} logged nothing"
    return parsed


def about(lines: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """The lines a user grepping for the job's id finds (in the text or as the field)."""
    return [line for line in lines if job_id in json.dumps(line)]


def assert_all_carry(lines: list[dict[str, Any]], job_id: str, job_type: str) -> None:
    assert lines, f"no line about job {job_id}"
    for line in lines:
        assert (line.get("job_id"), line.get("job_type")) == (job_id, job_type), line


def said(lines: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [line for line in lines if text in line["message"]]


# --- the formatters -----------------------------------------------------------------------------


def emitted(formatter: logging.Formatter, emit: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(logs.JobContextFilter())
    logger = logging.getLogger("tests.logs.sample")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_a_json_line_has_the_fields_and_the_job_in_hand_without_the_call_naming_it():
    def emit(logger: logging.Logger) -> None:
        logger.info("before any job")
        with logs.job_context("0b8e", "report"):
            logger.warning("a line of the job's own code\nover two lines", extra={"anything": object()})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("it failed")
        logger.info("explicit", extra=logs.job_extra("77aa", "email"))

    lines = json_lines(emitted(logs.JsonFormatter(role="worker"), emit), "sample")
    assert len(lines) == 4  # one line per record, whatever the message holds
    first, inside, failed, explicit = lines
    assert set(first) == {"time", "level", "logger", "message", "role", "pid"}
    assert first["time"].endswith("Z")
    assert first["time"][10] == "T"
    assert (first["level"], first["logger"], first["role"]) == ("INFO", "tests.logs.sample", "worker")
    assert isinstance(first["pid"], int)
    assert (inside["job_id"], inside["job_type"], inside["message"]) == (
        "0b8e",
        "report",
        "a line of the job's own code\nover two lines",
    )
    assert failed["job_id"] == "0b8e"
    assert "ValueError: boom" in failed["exception"]
    assert "Traceback" in failed["exception"]
    assert (explicit["job_id"], explicit["job_type"]) == ("77aa", "email")


def test_plain_lines_stay_readable_and_end_with_the_job():
    def emit(logger: logging.Logger) -> None:
        logger.info("no job here")
        with logs.job_context("0b8e", "report"):
            logger.info("job 0b8e finished")

    text = emitted(logs.PlainFormatter(), emit)
    first, second = text.splitlines()
    assert first.endswith("INFO tests.logs.sample: no job here")
    assert second.endswith("INFO tests.logs.sample: job 0b8e finished job=0b8e type=report")


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["manage.py", "rqworker", "high"], "worker"),
        (["/srv/app/manage.py", "runscheduler", "--tick", "1"], "scheduler"),
        (["manage.py", "runserver"], "web"),
        (["/venv/bin/gunicorn", "queueproject.asgi:application"], "web"),
        (["manage.py", "reconcile_jobs"], "reconcile_jobs"),
    ],
)
def test_a_process_role_comes_from_its_command(argv, role):
    assert logs.process_role(argv) == role


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "ENV_FILE": "/nonexistent", "DEBUG": "true", **env}
    code = "import queueproject.settings as s; print(s.LOG_FORMAT, s.LOGGING['handlers']['console']['formatter'])"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def test_plain_is_the_default_and_a_bad_format_stops_start_up():
    assert load_settings().stdout.split() == ["plain", "plain"]
    assert load_settings(LOG_FORMAT="JSON").stdout.split() == ["json", "json"]
    bad = load_settings(LOG_FORMAT="xml")
    assert bad.returncode != 0
    assert "LOG_FORMAT must be plain or json, got 'xml'" in bad.stderr
    bad_level = load_settings(LOG_LEVEL="loud")
    assert bad_level.returncode != 0
    assert "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL" in bad_level.stderr


# --- the web's lines ------------------------------------------------------------------------------


@pytest.fixture
def json_caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """This process's log lines as LOG_FORMAT=json writes them (the handler's formatter and filter)."""
    caplog.set_level(logging.INFO)
    caplog.handler.setFormatter(logs.JsonFormatter())
    caplog.handler.addFilter(logs.JobContextFilter())
    return caplog


@pytest.mark.django_db(transaction=True)  # the API's own path: no transaction around the request
def test_a_job_created_and_acted_on_through_the_api_is_in_the_web_log_with_its_id(json_caplog):
    client = APIClient()
    client.force_authenticate(make_user("otto", groups=(OPERATORS,)))
    response = client.post("/api/jobs", {"type": "example", "delay_seconds": 600}, format="json")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    assert client.post(f"/api/jobs/{job_id}/action", {"action": "cancel"}, format="json").status_code == 200

    lines = about(json_lines(json_caplog.text, "web"), job_id)
    assert_all_carry(lines, job_id, "example")
    assert {line["role"] for line in lines} == {"web"}
    assert said(lines, "created: example on default, due ")
    assert said(lines, "canceled by otto (api)")


@pytest.mark.django_db
def test_the_reconcilers_verdict_on_a_job_carries_it(json_caplog):
    row = history_row(JobStatus.QUEUED, attempts=0)
    services.job_give_up_on(job=row, outcome=JobStatus.LOST, reason="Redis no longer has this job")
    lines = about(json_lines(json_caplog.text, "scheduler"), str(row.pk))
    assert_all_carry(lines, str(row.pk), "example")
    assert said(lines, "lost: Redis no longer has this job; run again")


# --- the worker's and the scheduler's lines -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_one_job_can_be_followed_through_the_worker_and_the_scheduler_json_logs(processes: Processes, json_caplog):
    declared = json.dumps([{"name": "logs", "type": "example", "every": 1, "params": {"duration": 0}}])
    scheduler = processes.scheduler(LOG_FORMAT="json", JOBS_SCHEDULES=declared)
    worker = processes.worker(LOG_FORMAT="json")

    client = APIClient()
    client.force_authenticate(make_user("otto", groups=(OPERATORS,)))
    response = client.post("/api/jobs", {"type": "example", "params": QUICK, "delay_seconds": 1}, format="json")
    assert response.status_code == 201, response.content
    delayed = response.json()["id"]
    failing = str(services.job_enqueue(type="example", params={"duration": 0, "fail": True}).pk)

    wait_for(lambda: Job.objects.get(pk=delayed).status == JobStatus.FINISHED, 30, message="the delayed job")
    wait_for(lambda: Job.objects.get(pk=failing).attempts >= 2, 30, message="the failing job's second attempt")
    run = wait_for(
        lambda: ScheduleRun.objects.filter(job__status=JobStatus.FINISHED).select_related("job").first(),
        30,
        message="a schedule's job to finish",
    )
    scheduled = str(run.job.pk)
    processes.stop_all()  # every line written and whole

    web = json_lines(json_caplog.text, "web")
    worker_lines = json_lines(processes.log(worker), "worker")
    scheduler_lines = json_lines(processes.log(scheduler), "scheduler")
    assert {line["role"] for line in worker_lines} == {"worker"}
    assert {line["role"] for line in scheduler_lines} == {"scheduler"}

    # The delayed job: created by the web, promoted by the scheduler, run and finished by the worker.
    for lines in (web, worker_lines, scheduler_lines):
        assert_all_carry(about(lines, delayed), delayed, "example")
    assert said(about(web, delayed), "created: example on default, due ")
    assert said(about(scheduler_lines, delayed), "promoted")
    mine = about(worker_lines, delayed)
    assert said(mine, "started on")
    assert said(mine, "finished (attempt 1) in")
    assert said(mine, "Job OK")  # RQ's own line, in the work horse
    assert len({line["pid"] for line in mine}) >= 2  # the worker's and its work horse's lines

    # The failing job: its failure with its traceback, its retry promoted, its second attempt.
    assert_all_carry(about(worker_lines, failing), failing, "example")
    assert_all_carry(about(scheduler_lines, failing), failing, "example")
    mine = about(worker_lines, failing)
    assert said(mine, "failed (attempt 1)")
    assert said(mine, "ExampleJobFailed: the example job was asked to fail")
    assert any(line["level"] == "ERROR" and "Traceback" in line["message"] for line in mine)
    assert said(about(scheduler_lines, failing), "promoted")
    assert said(mine, "(attempt 2)")

    # A schedule's run: created and sent by the scheduler, run by the worker.
    assert_all_carry(about(scheduler_lines, scheduled), scheduled, "example")
    assert_all_carry(about(worker_lines, scheduled), scheduled, "example")
    mine = about(scheduler_lines, scheduled)
    assert said(mine, "schedule 'logs', ")
    assert said(mine, "created: example on default by system")
    assert said(mine, "sent to default")
    assert said(about(worker_lines, scheduled), "finished (attempt 1)")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_plain_text_is_the_default_and_names_the_job(processes: Processes):
    worker = processes.worker(LOG_FORMAT="")  # unset
    job_id = str(services.job_enqueue(type="example", params=QUICK).pk)
    wait_for(lambda: Job.objects.get(pk=job_id).status == JobStatus.FINISHED, 30, message="the job to finish")
    processes.stop_all()

    text = processes.log(worker)
    assert not any(line.startswith("{") for line in text.splitlines())
    mine = [line for line in text.splitlines() if job_id in line]
    started = [line for line in mine if " INFO jobs.worker: job " in line and " started on " in line]
    finished = [line for line in mine if " finished (attempt 1) in " in line]
    assert started
    assert finished
    for line in started + finished:
        assert line.endswith(f" job={job_id} type=example"), line
