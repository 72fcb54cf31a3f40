"""A job of each built-in type runs through a real worker and its row tells the whole story."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from jobs import services
from jobs.models import Job
from jobs.services import JobRequest
from jobs.statuses import AttemptOutcome, JobStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


def finished(job: Job, timeout: float = 60) -> Job:
    def done():
        job.refresh_from_db()
        return job.status in {JobStatus.FINISHED, JobStatus.FAILED}

    wait_for(done, timeout, message=f"job {job.id} to end")
    return job


def test_example_job_reports_progress_and_finishes_with_its_result(processes):
    processes.worker()
    job = services.job_enqueue(type="example", params={"duration": 1.0, "steps": 5, "message": "hi"})
    assert job.status == JobStatus.QUEUED

    seen_progress = set()

    def progressing():
        job.refresh_from_db()
        if job.status == JobStatus.STARTED:
            seen_progress.add(job.progress)
        return job.status == JobStatus.FINISHED

    wait_for(progressing, 30, interval=0.05, message="the example job to finish")
    assert job.result == {"slept": 1.0, "message": "hi"}
    assert job.progress == 100
    assert job.attempts == 1
    assert job.started_at is not None
    assert job.ended_at is not None
    assert job.ended_at > job.started_at
    assert job.worker_name
    assert any(0 < p < 100 for p in seen_progress), f"no intermediate progress seen: {seen_progress}"
    [attempt] = job.attempt_set.all()
    assert attempt.outcome == AttemptOutcome.FINISHED
    assert attempt.worker_name == job.worker_name


def test_email_job_sends_through_the_configured_backend(processes, tmp_path: Path):
    mail_dir = tmp_path / "mail"
    processes.worker(EMAIL_FILE_PATH=str(mail_dir))
    job = services.job_enqueue(
        type="email", params={"to": ["ada@example.com"], "subject": "Report ready", "body": "See attached."}
    )
    assert job.queue == "high"
    finished(job)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.result is not None
    assert job.result["sent"] == 1
    [sent] = list(mail_dir.iterdir())
    text = sent.read_text()
    assert "Subject: Report ready" in text
    assert "To: ada@example.com" in text


def test_report_job_writes_a_csv_of_the_history_and_links_to_it(processes, settings_media):
    processes.worker(MEDIA_ROOT=str(settings_media))
    services.job_enqueue(type="example", params={"duration": 0})
    services.job_enqueue(type="example", params={"duration": 0})
    report = services.job_enqueue(type="report")
    finished(report)
    assert report.status == JobStatus.FINISHED, report.error
    assert report.result["download_url"] == f"/reports/{report.id}.csv"
    rows = list(csv.DictReader(io.StringIO((settings_media / report.result["file"]).read_text())))
    by_type = {(row["type"], row["status"]): int(row["jobs"]) for row in rows}
    # The report counts the history as it was: both example jobs, and itself if its row was committed
    # when it ran (a worker can start a job before the transaction that made its row commits).
    assert sum(count for (kind, _), count in by_type.items() if kind == "example") == 2
    assert sum(count for (kind, _), count in by_type.items() if kind == "report") <= 1


@pytest.fixture
def settings_media(tmp_path: Path) -> Path:
    """Where the worker process writes report files."""
    return tmp_path / "media"


def test_a_running_job_can_be_stopped_and_is_recorded_as_stopped(processes):
    processes.worker()
    job = services.job_enqueue(type="example", params={"duration": 30, "steps": 30})
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.STARTED, 20, message="the job to start")
    services.job_stop(job=Job.objects.get(pk=job.pk))

    def stopped():
        job.refresh_from_db()
        return job.status == JobStatus.STOPPED

    wait_for(stopped, 20, message="the job to be stopped")
    assert job.ended_at is not None
    [attempt] = job.attempt_set.all()
    assert attempt.outcome == AttemptOutcome.STOPPED
    # A stopped job may be retried.
    retried = services.job_retry(job=job)
    assert retried.status == JobStatus.QUEUED


def test_the_simple_worker_class_mirrors_too(processes):
    processes.worker(worker_class="jobs.worker.SimpleWorker")
    ok = services.job_enqueue(type="example", params={"duration": 0.2, "steps": 2})
    bad = services.job_enqueue(type="example", params={"duration": 0, "fail": True}, queue="high")
    finished(ok)
    assert ok.status == JobStatus.FINISHED
    assert ok.result == {"slept": 0.2, "message": ""}

    def first_failure_recorded():
        return bad.attempt_set.filter(outcome=AttemptOutcome.FAILED).exists()

    wait_for(first_failure_recorded, 20, message="the failure to be mirrored")
    bad.refresh_from_db()  # the row and its attempt are written together: read the row after
    # No scheduler runs here: the job waits for its retry, and says when.
    assert bad.status == JobStatus.SCHEDULED
    assert bad.scheduled_for is not None
    assert "the example job was asked to fail" in bad.error
    assert "Traceback" in bad.attempt_set.get().traceback


def test_every_job_of_a_bulk_request_runs_with_its_own_params(processes):
    processes.worker(worker_class="jobs.worker.SimpleWorker")
    jobs = services.jobs_enqueue(
        requests=[
            JobRequest(type="example", params={"duration": 0.2, "steps": 2, "message": f"job {index}"}, queue=queue)
            for index, queue in enumerate(["default", "low", "default", "high"])
        ]
    )
    for index, job in enumerate(jobs):
        finished(job)
        assert job.status == JobStatus.FINISHED
        assert job.result == {"slept": 0.2, "message": f"job {index}"}
        assert job.attempts == 1
