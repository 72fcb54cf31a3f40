"""Files in S3: a worker writes the report to a bucket, the web serves it from there.

An S3 server (moto's server mode, in a thread) is started by each test; the worker gets a
local folder of its own, so the report can only reach the web through the bucket.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.test import override_settings
from moto.server import ThreadedMotoServer

from jobs import files, services
from jobs.models import Job
from jobs.statuses import JobStatus
from jobs.tasks.report import report_path
from tests.conftest import BASE_DIR, wait_for
from tests.helpers import make_user

pytestmark = pytest.mark.once

BUCKET = "queueproject-files"
PREFIX = "tenant-a"


class S3Server:
    """moto's S3 server, in a thread of the test's process on a port the system picks (two test passes
    run at once: a fixed port could be the other pass's server), emptied and stopped at the end."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def environment(self) -> dict[str, str]:
        """What a deployment sets to keep its files in this bucket."""
        return {
            "FILES_STORAGE": "s3",
            "AWS_STORAGE_BUCKET_NAME": BUCKET,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test-access-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret-key",
            "AWS_LOCATION": PREFIX,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test-access-key",
            aws_secret_access_key="test-secret-key",
        )

    def stop(self) -> None:
        # Its buckets live in this process's memory: forget them, for the next test's server.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)
        self.server.stop()


def load_settings(names: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Start the settings with only `env` (no .env file) and print the named settings as JSON."""
    environment = {"PATH": "/usr/bin:/bin", "ENV_FILE": "/nonexistent", "DEBUG": "true", **env}
    code = (
        f"import json, queueproject.settings as s; print(json.dumps({{n: getattr(s, n) for n in {names.split()!r}}}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_storages(s3: S3Server) -> Iterator[dict[str, Any]]:
    """This process (the web) stores files as the settings make it with the S3 variables."""
    result = load_settings("STORAGES", **s3.environment())
    assert result.returncode == 0, result.stderr
    storages = json.loads(result.stdout)["STORAGES"]
    with override_settings(STORAGES=storages):
        yield storages


def csv_counts(content: bytes) -> Counter[tuple[str, str]]:
    rows = csv.DictReader(io.StringIO(content.decode()))
    return Counter({(row["type"], row["status"]): int(row["jobs"]) for row in rows})


@pytest.mark.slow
def test_a_report_written_by_a_worker_into_s3_downloads_from_the_web(
    processes, s3, s3_storages, client, settings, tmp_path
):
    # The worker's own folder, and another one for the web: nothing is shared but the bucket.
    worker_media = tmp_path / "worker-media"
    settings.MEDIA_ROOT = tmp_path / "web-media"
    processes.worker(MEDIA_ROOT=str(worker_media), **s3.environment())

    examples = [services.job_enqueue(type="example", params={"duration": 0}) for _ in range(2)]
    services.job_cancel(job=services.job_enqueue(type="example", delay_seconds=600))
    wait_for(
        lambda: all(Job.objects.get(pk=job.pk).status == JobStatus.FINISHED for job in examples),
        30,
        message="the example jobs to finish",
    )
    report = services.job_enqueue(type="report")
    wait_for(
        lambda: Job.objects.get(pk=report.pk).status in {JobStatus.FINISHED, JobStatus.FAILED},
        30,
        message="the report to end",
    )
    report.refresh_from_db()
    assert report.status == JobStatus.FINISHED, report.error

    # The object is in the bucket, under the deployment's prefix, and private.
    key = f"{PREFIX}/reports/{report.id}.csv"
    listed = [item["Key"] for item in s3.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert listed == [key]
    grants = s3.client().get_object_acl(Bucket=BUCKET, Key=key)["Grants"]
    assert not [grant for grant in grants if grant["Grantee"].get("URI", "").endswith("/AllUsers")]
    assert not worker_media.exists() or not any(worker_media.rglob("*.csv"))

    # A permitted user downloads it from the web; its rows are the history's.
    client.force_login(make_user("viewer", perms=("view_job",)))
    response = client.get(report.result["download_url"])
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="report-{report.id}.csv"'
    assert response["Content-Type"] == "text/csv"
    history = Counter((job.type, job.status) for job in Job.objects.exclude(pk=report.pk))
    assert history == Counter({("example", "finished"): 2, ("example", "canceled"): 1})
    counts = csv_counts(b"".join(response.streaming_content))
    # ... and the report itself if its row was committed when it ran (a worker can start a job before
    # the transaction that made its row commits), as queued or started.
    itself = [status for kind, status in counts.elements() if kind == "report"]
    assert len(itself) <= 1
    assert set(itself) <= {JobStatus.QUEUED, JobStatus.STARTED}
    assert counts - Counter(("report", status) for status in itself) == history

    # A user without the permission is refused; once the object is gone, the download is 404.
    client.force_login(make_user("nobody"))
    assert client.get(report.result["download_url"]).status_code == 403
    s3.client().delete_object(Bucket=BUCKET, Key=key)
    client.force_login(make_user("viewer2", perms=("view_job",)))
    assert client.get(report.result["download_url"]).status_code == 404


@pytest.mark.slow
@pytest.mark.django_db
def test_downloads_can_redirect_to_a_short_lived_signed_url(s3, s3_storages, client, settings):
    settings.FILES_DOWNLOAD_REDIRECT = True
    job_id = "4b0f6c1e-6a53-4b0c-9a84-0c5a3f1f6f10"
    stored = files.save_job_file(report_path(job_id), "type,status,jobs,avg_seconds\nexample,finished,3,0.500\n")
    assert stored == report_path(job_id)

    client.force_login(make_user("nobody"))
    assert client.get(f"/reports/{job_id}.csv").status_code == 403

    client.force_login(make_user("viewer", perms=("view_job",)))
    response = client.get(f"/reports/{job_id}.csv")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{s3.endpoint}/{BUCKET}/{PREFIX}/reports/{job_id}.csv?")
    assert "X-Amz-Expires=300" in location
    assert "X-Amz-Signature=" in location
    # The signed link works without a session; the same address unsigned is refused.
    with urllib.request.urlopen(location, timeout=10) as fetched:
        assert csv_counts(fetched.read()) == Counter({("example", "finished"): 3})
        assert fetched.headers["Content-Disposition"] == f'attachment; filename="report-{job_id}.csv"'
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(location.split("?")[0], timeout=10)
    assert refused.value.code == 403

    s3.client().delete_object(Bucket=BUCKET, Key=f"{PREFIX}/reports/{job_id}.csv")
    assert client.get(f"/reports/{job_id}.csv").status_code == 404


@pytest.mark.django_db
def test_the_local_folder_always_serves_downloads_through_the_web(client, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.FILES_DOWNLOAD_REDIRECT = True  # the folder has no address of its own to redirect to
    job_id = "0d1f3c2a-5b7e-4d6f-8a9b-1c2d3e4f5a6b"
    files.save_job_file(report_path(job_id), b"type,status,jobs,avg_seconds\nemail,failed,1,\n")
    files.save_job_file(report_path(job_id), b"type,status,jobs,avg_seconds\nemail,finished,4,0.250\n")
    assert [path.name for path in (tmp_path / "reports").iterdir()] == [f"{job_id}.csv"]  # replaced, not copied

    client.force_login(make_user("viewer", perms=("view_job",)))
    response = client.get(f"/reports/{job_id}.csv")
    assert response.status_code == 200
    assert csv_counts(b"".join(response.streaming_content)) == Counter({("email", "finished"): 4})


def test_files_go_to_the_local_folder_unless_the_environment_chooses_s3():
    result = load_settings("STORAGES FILES_STORAGE")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["FILES_STORAGE"] == "local"
    assert loaded["STORAGES"]["default"] == {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    assert loaded["STORAGES"]["staticfiles"]["BACKEND"] == "django.contrib.staticfiles.storage.StaticFilesStorage"


def test_s3_without_a_bucket_stops_start_up_with_a_clear_message():
    result = load_settings("STORAGES", FILES_STORAGE="s3", AWS_S3_ENDPOINT_URL="http://127.0.0.1:9000")
    assert result.returncode != 0
    assert "FILES_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME" in result.stderr


def test_an_unknown_storage_is_refused():
    result = load_settings("STORAGES", FILES_STORAGE="ftp")
    assert result.returncode != 0
    assert "FILES_STORAGE must be local or s3, got 'ftp'" in result.stderr


def test_s3_settings_keep_files_private_and_links_short_lived():
    result = load_settings(
        "STORAGES", FILES_STORAGE="s3", AWS_STORAGE_BUCKET_NAME="reports", AWS_LOCATION="/prod/", AWS_ACCESS_KEY_ID=""
    )
    assert result.returncode == 0, result.stderr
    default = json.loads(result.stdout)["STORAGES"]["default"]
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    options = default["OPTIONS"]
    assert options["bucket_name"] == "reports"
    assert options["location"] == "prod"
    assert options["default_acl"] is None
    assert options["querystring_auth"] is True
    assert options["querystring_expire"] == 300
    assert options["access_key"] is None  # boto3 looks for credentials itself (a machine's role)


def test_any_storage_class_can_be_chosen_by_its_dotted_path():
    result = load_settings(
        "STORAGES",
        FILES_STORAGE_BACKEND="storages.backends.gcloud.GoogleCloudStorage",
        FILES_STORAGE_OPTIONS='{"bucket_name": "reports"}',
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["STORAGES"]["default"] == {
        "BACKEND": "storages.backends.gcloud.GoogleCloudStorage",
        "OPTIONS": {"bucket_name": "reports"},
    }
