"""Settings for queueproject, read from the environment only.

Every variable is documented in `.env.example`. A bad value raises
`ImproperlyConfigured` at start-up instead of surfacing later as a strange error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.connection import parse_url as parse_redis_url
from redis.retry import Retry

from jobs.queue_names import QUEUE_NAMES

BASE_DIR = Path(__file__).resolve().parent.parent


def _load_env_file(path: Path) -> None:
    """Read KEY=value lines from `.env` (if there is one); the real environment wins."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        os.environ.setdefault(key.strip(), value.strip().strip("\"'"))


_load_env_file(Path(os.environ.get("ENV_FILE", BASE_DIR / ".env")))


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (see .env.example)")
    SECRET_KEY = "insecure-development-key-only-used-when-debug-is-on"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_rq",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "queueproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "queueproject.wsgi.application"
ASGI_APPLICATION = "queueproject.asgi.application"

# --- Database ---------------------------------------------------------------
# SQLite by default (one-command local run), Postgres in production.
# Long-lived processes (workers' mirror threads, the scheduler) keep their
# connection: reconnecting per job is what makes naive mirrors slow.
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("CONN_MAX_AGE", 600))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web, the mirror and the scheduler read while one writes;
    # IMMEDIATE transactions make writers queue on the busy timeout instead of
    # failing with "database is locked" when they upgrade a read lock.
    _database["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _database["CONN_MAX_AGE"] = 0 if _database["NAME"] == ":memory:" else _database["CONN_MAX_AGE"]
    _name = Path(str(_database["NAME"]))
    if _database["NAME"] != ":memory:" and not _name.is_absolute():
        _name = BASE_DIR / _name  # relative to the project, not to where a command runs
        _database["NAME"] = str(_name)
    # Tests use a file (worker processes must see it) beside the database: test-<name>.
    _database.setdefault("TEST", {})["NAME"] = str(_name.with_name(f"test-{_name.name}"))
else:
    _database["CONN_HEALTH_CHECKS"] = True
    if env_bool("DB_POOL", False):
        # For the web process only (the Procfile and docker-compose set it): under
        # ASGI every request runs in a new thread, so per-thread persistent
        # connections are never reused; a pool is. Not for workers: a forked job
        # must never inherit a pooled connection of its parent.
        _database["CONN_MAX_AGE"] = 0
        _database["CONN_HEALTH_CHECKS"] = False
        _database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN", 2),
            "max_size": env_int("DB_POOL_MAX", 10),
            "timeout": 10,
        }
DATABASES: dict[str, Any] = {"default": _database}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and queues ------------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Socket timeouts keep every caller (web requests included) from hanging when
# Redis stops answering: they get a clear "queue unavailable" error instead.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0)

# Queue names and their order of priority are owned by jobs.queue_names; django-rq
# only needs to know how to connect to each.
try:
    _redis = parse_redis_url(REDIS_URL)
except ValueError as exc:
    raise ImproperlyConfigured(f"REDIS_URL is not a valid Redis URL: {exc}") from None
# Host, port and db rather than django-rq's "URL" form, which drops the client
# options: the socket timeouts must reach every connection.
RQ_QUEUES = {
    name: {
        "HOST": _redis.get("host", "127.0.0.1"),
        "PORT": _redis.get("port", 6379),
        "DB": _redis.get("db", 0),
        "USERNAME": _redis.get("username"),
        "PASSWORD": _redis.get("password"),
        "SSL": "connection_class" in _redis,
        "DEFAULT_TIMEOUT": 600,
        "SERIALIZER": "rq.serializers.JSONSerializer",
        "REDIS_CLIENT_KWARGS": {
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "health_check_interval": 30,
            # One try: a caller waiting on a dead Redis gets its answer (503) in seconds.
            # Workers and the mirror retry on their own, with backoff.
            "retry": Retry(NoBackoff(), 0),
        },
    }
    for name in QUEUE_NAMES
}
RQ = {
    "WORKER_CLASS": "jobs.worker.Worker",
    "JOB_CLASS": "jobs.rqstore.MirroredJob",
}
RQ_SHOW_ADMIN_LINK = True

# How long Redis keeps finished/failed jobs: the database keeps them forever.
JOBS_RESULT_TTL = env_int("JOBS_RESULT_TTL", 500)
JOBS_FAILURE_TTL = env_int("JOBS_FAILURE_TTL", 7 * 24 * 3600)
# Seconds without a heartbeat after which a started job's worker is dead.
JOBS_WORKER_DEAD_AFTER = env_int("JOBS_WORKER_DEAD_AFTER", 15)
# How often the scheduler process runs the reconciler.
JOBS_RECONCILE_INTERVAL = env_float("JOBS_RECONCILE_INTERVAL", 10.0)
# Seconds the active scheduler's lock lives without renewal: a standby takes over within this
# long of the active one's death (renewed every third of it while the active one lives).
JOBS_SCHEDULER_LOCK_TTL = env_int("JOBS_SCHEDULER_LOCK_TTL", 15)
if JOBS_SCHEDULER_LOCK_TTL < 1:
    raise ImproperlyConfigured("JOBS_SCHEDULER_LOCK_TTL must be at least 1 (seconds)")
# Your own modules that register job types (comma-separated dotted paths).
JOBS_MODULES = env_list("JOBS_MODULES", "")
# While the event stream holds more entries than this (the history is behind), workers
# skip progress reports and keep results as previews; transitions are always kept.
JOBS_STREAM_BACKLOG_LIMIT = env_int("JOBS_STREAM_BACKLOG_LIMIT", 50_000)
# Callables that jobs enqueued with plain django-rq may still run (comma-separated dotted
# paths), while a team moves to job types; any other job that did not come through the
# product fails without running. Both get a history row of type "external".
JOBS_EXTERNAL_CALLABLES = env_list("JOBS_EXTERNAL_CALLABLES", "")


def env_schedules(name: str) -> list[dict[str, Any]]:
    """Schedules declared in code: a JSON list of objects (name, type, cron or every, and optionally
    params, queue, timezone, missed, start_at, end_at); the scheduler makes them exist at its start."""
    import json

    try:
        value = json.loads(env(name, "[]"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON list of schedules: {exc}") from exc
    if not isinstance(value, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("type"), str)
        for entry in value
    ):
        raise ImproperlyConfigured(f"{name} must be a JSON list of objects, each with a name and a type")
    return value


JOBS_SCHEDULES = env_schedules("JOBS_SCHEDULES")
# Where the report job writes its files.
MEDIA_ROOT = BASE_DIR / env("MEDIA_ROOT", "media")  # relative paths are relative to the project
MEDIA_URL = "/media/"

# --- E-mail ------------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", str(BASE_DIR / "sent-mail"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "jobs@localhost")

# --- Auth, i18n, static ---------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The Jobs page's own login (the admin's only lets staff in).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "jobs:page"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    # Token first: an unauthenticated request gets 401 with WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["jobs.api.permissions.JobPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": ["jobs.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "jobs.api.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"job_writes": env("JOBS_API_WRITE_RATE", "600/min")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Jobs API",
    "DESCRIPTION": "Background jobs on RQ with a durable history: create, list, inspect, retry, cancel, stop, "
    "promote and remove jobs; statistics and job types.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its documentation pages are for users who are logged in (jobs.api.docs).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# The cache lives in the shared Redis: API throttling counts across every web process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
        "OPTIONS": {
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
