"""Settings come from the environment and refuse bad values at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import BASE_DIR


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    # With DEBUG off the hosts and origins are required too (tests/test_production_settings.py).
    required = {"ALLOWED_HOSTS": "jobs.example.com", "CSRF_TRUSTED_ORIGINS": "https://jobs.example.com"}
    environment = {"PATH": "/usr/bin:/bin", "ENV_FILE": "/nonexistent", **required, **env}
    code = "import queueproject.settings as s; print(s.DATABASES['default']['ENGINE'], s.REDIS_URL, s.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def test_secret_key_is_required_when_debug_is_off():
    result = load_settings(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_defaults_are_sqlite_and_local_redis():
    result = load_settings(DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "redis://127.0.0.1:6379/0", "True"]


def test_postgres_comes_from_database_url():
    result = load_settings(SECRET_KEY="x", DATABASE_URL="postgres://u:p@db.example:5432/jobs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "django.db.backends.postgresql"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be a boolean"),
        ("JOBS_RESULT_TTL", "soon", "JOBS_RESULT_TTL must be an integer"),
        ("DATABASE_URL", "nosuchdb://x", "DATABASE_URL is not a valid database URL"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(name, value, message):
    result = load_settings(**{"SECRET_KEY": "x", name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_queues_use_json_and_time_out_instead_of_hanging():
    for config in settings.RQ_QUEUES.values():
        assert config["SERIALIZER"] == "rq.serializers.JSONSerializer"
        assert config["REDIS_CLIENT_KWARGS"]["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT
    assert list(settings.RQ_QUEUES) == ["high", "default", "low"]
