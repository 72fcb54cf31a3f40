"""The report download link that a report job's result points to."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.authtoken.models import Token

from jobs.tasks.report import report_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def report_file(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    job_id = str(uuid.uuid4())
    default_storage.save(report_path(job_id), ContentFile(b"type,status,jobs,avg_seconds\nexample,finished,2,1.000\n"))
    return job_id


def test_a_viewer_downloads_the_csv(client, report_file):
    user = User.objects.create_user("viewer", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(user)
    response = client.get(f"/reports/{report_file}.csv")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="report-{report_file}.csv"'
    assert b"example,finished,2" in b"".join(response.streaming_content)


def test_anonymous_users_are_sent_to_log_in(client, report_file):
    response = client.get(f"/reports/{report_file}.csv")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_users_without_permission_are_refused(client, report_file):
    client.force_login(User.objects.create_user("nobody", password="pw"))
    assert client.get(f"/reports/{report_file}.csv").status_code == 403


def test_a_missing_report_is_404(client, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    assert client.get(f"/reports/{uuid.uuid4()}.csv").status_code == 404


def test_an_api_client_downloads_with_its_token(client, report_file):
    """The API's `download_url` works with the token the client already sends to the API."""
    viewer = User.objects.create_user("viewer", password="pw")
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    token = Token.objects.create(user=viewer)
    response = client.get(f"/reports/{report_file}.csv", headers={"Authorization": f"Token {token.key}"})
    assert response.status_code == 200
    assert b"example,finished,2" in b"".join(response.streaming_content)

    nobody = Token.objects.create(user=User.objects.create_user("nobody", password="pw"))
    assert (
        client.get(f"/reports/{report_file}.csv", headers={"Authorization": f"Token {nobody.key}"}).status_code == 403
    )
    wrong = client.get(f"/reports/{report_file}.csv", headers={"Authorization": "Token not-a-token"})
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == "Token"


def test_under_asgi_the_file_is_streamed_in_chunks(async_client, report_file):
    """Served by the ASGI server (as deployed), the download reads the file in a thread per chunk."""
    viewer = User.objects.create_user("viewer", password="pw")
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    token = Token.objects.create(user=viewer)

    async def download() -> tuple[int, bool, bytes]:
        response = await async_client.get(
            f"/reports/{report_file}.csv", headers={"Authorization": f"Token {token.key}"}
        )
        return response.status_code, response.is_async, b"".join([chunk async for chunk in response.streaming_content])

    status, is_async, body = async_to_sync(download)()
    assert status == 200
    assert is_async
    assert body == b"type,status,jobs,avg_seconds\nexample,finished,2,1.000\n"
