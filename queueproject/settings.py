"""Settings for queueproject, read from the environment only.

Every variable is documented in `.env.example`. A bad value raises
`ImproperlyConfigured` at start-up instead of surfacing later as a strange error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from jobs import redis_config
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


def split_list(value: str) -> list[str]:
    """`a, b,,c` -> ["a", "b", "c"]."""
    return [item.strip() for item in value.split(",") if item.strip()]


def env_list(name: str, default: str) -> list[str]:
    return split_list(env(name, default))


DEBUG = env_bool("DEBUG", False)


def env_required(name: str, what: str, debug_default: str) -> str:
    """A value production cannot guess: missing while DEBUG is off stops start-up, saying what to set."""
    value = env(name).strip()
    if value:
        return value
    if not DEBUG:
        raise ImproperlyConfigured(f"{name} is required when DEBUG is off: {what} (see .env.example)")
    return debug_default


SECRET_KEY = env_required(
    "SECRET_KEY",
    "a long random string, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(50))'",
    "insecure-development-key-only-used-when-debug-is-on",
)
ALLOWED_HOSTS = split_list(
    env_required(
        "ALLOWED_HOSTS", "the host names the site answers to, e.g. jobs.example.com", "localhost,127.0.0.1,[::1]"
    )
)
CSRF_TRUSTED_ORIGINS = split_list(
    env_required("CSRF_TRUSTED_ORIGINS", "the site's origins with their scheme, e.g. https://jobs.example.com", "")
)
if not all(origin.startswith(("https://", "http://")) for origin in CSRF_TRUSTED_ORIGINS):
    raise ImproperlyConfigured("CSRF_TRUSTED_ORIGINS takes origins with their scheme, e.g. https://jobs.example.com")

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
    "jobs.middleware.DatabaseUnavailableMiddleware",
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
            # How long a request waits for a connection: with the database down, it is answered
            # 503 after this long (a pool cannot tell a busy database from a dead one sooner).
            "timeout": 2,
        }
DATABASES: dict[str, Any] = {"default": _database}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and queues ------------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Socket timeouts keep every caller (web requests included) from hanging when
# Redis stops answering: they get a clear "queue unavailable" error instead.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0)

# Redis Sentinel (host:port,host:port): the master's address comes from the Sentinels;
# REDIS_URL then gives only the database, user, password and TLS (rediss://).
REDIS_SENTINELS = env("REDIS_SENTINELS")
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER", "mymaster")
REDIS_SENTINEL_PASSWORD = env("REDIS_SENTINEL_PASSWORD")

# Queue names and their order of priority are owned by jobs.queue_names; django-rq
# only needs to know how to connect to each: django-rq's own connection settings
# (host or Sentinels, password, TLS, socket timeouts), which every Redis client of
# the product follows (jobs.redis_config).
try:
    _redis_connection = redis_config.rq_connection(
        REDIS_URL,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        sentinels=redis_config.parse_sentinels(REDIS_SENTINELS),
        master=REDIS_SENTINEL_MASTER,
        sentinel_password=REDIS_SENTINEL_PASSWORD,
    )
except redis_config.RedisConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None
RQ_QUEUES = {
    name: {**_redis_connection, "DEFAULT_TIMEOUT": 600, "SERIALIZER": "rq.serializers.JSONSerializer"}
    for name in QUEUE_NAMES
}
RQ = {
    # `manage.py rqworker` runs the pooled worker (jobs.pool): jobs one after the other in a long-lived
    # child process, replaced if it dies; `--worker-class jobs.worker.Worker` forks one per job (RQ's).
    "WORKER_CLASS": "jobs.pool.PooledWorker",
    "JOB_CLASS": "jobs.rqstore.MirroredJob",
}
RQ_SHOW_ADMIN_LINK = True
# How many jobs `manage.py rqworker` runs at once (its pool's child processes).
JOBS_RQWORKER_PROCESSES = env_int("JOBS_RQWORKER_PROCESSES", 1)
if JOBS_RQWORKER_PROCESSES < 1:
    raise ImproperlyConfigured("JOBS_RQWORKER_PROCESSES must be at least 1")

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
# `manage.py jobs_alive worker` (a liveness probe) fails a worker whose own RQ heartbeat is older
# than this: run such workers with `--worker-ttl 60` (they beat every 45 s while idle).
JOBS_ALIVE_THRESHOLD = env_int("JOBS_ALIVE_THRESHOLD", 90)
if JOBS_ALIVE_THRESHOLD < 1:
    raise ImproperlyConfigured("JOBS_ALIVE_THRESHOLD must be at least 1 (seconds)")
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
    params, queue, timezone, missed, start_at, end_at: ISO 8601, without an offset in the schedule's
    timezone); the scheduler makes them exist at its start, each on its own (a bad one is logged)."""
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
# History retention (jobs.retention): days an ended job is kept, by its final status (0: for good);
# the newest JOBS_RETENTION_KEEP_LAST jobs of each type and of each schedule are kept whatever their age.
JOBS_RETENTION_FINISHED_DAYS = env_int("JOBS_RETENTION_FINISHED_DAYS", 30)
JOBS_RETENTION_FAILED_DAYS = env_int("JOBS_RETENTION_FAILED_DAYS", 90)  # also abandoned and lost
JOBS_RETENTION_CANCELED_DAYS = env_int("JOBS_RETENTION_CANCELED_DAYS", 30)  # also stopped
JOBS_RETENTION_KEEP_LAST = env_int("JOBS_RETENTION_KEEP_LAST", 100)
# The hour of day (TIME_ZONE) at which the active scheduler prunes; -1: never (prunehistory only).
JOBS_RETENTION_HOUR = env_int("JOBS_RETENTION_HOUR", 3)
# Jobs deleted per transaction: each batch holds its row locks only for its own short transaction.
JOBS_RETENTION_BATCH = env_int("JOBS_RETENTION_BATCH", 2000)
for _retention in ("FINISHED_DAYS", "FAILED_DAYS", "CANCELED_DAYS", "KEEP_LAST"):
    if globals()[f"JOBS_RETENTION_{_retention}"] < 0:
        raise ImproperlyConfigured(f"JOBS_RETENTION_{_retention} must be 0 or more")
if not -1 <= JOBS_RETENTION_HOUR <= 23:
    raise ImproperlyConfigured("JOBS_RETENTION_HOUR must be an hour from 0 to 23, or -1 for never")
if not 1 <= JOBS_RETENTION_BATCH <= 50_000:
    raise ImproperlyConfigured("JOBS_RETENTION_BATCH must be from 1 to 50000")
# Where the report job writes its files.
MEDIA_ROOT = BASE_DIR / env("MEDIA_ROOT", "media")  # relative paths are relative to the project
MEDIA_URL = "/media/"

# --- Files: where jobs store what they produce (jobs.files) -----------------------
# The local folder (MEDIA_ROOT) by default; S3 (or MinIO...) so that a web server on one machine
# serves what a worker wrote on another; or any storage class (FILES_STORAGE_BACKEND).
FILES_STORAGE = env("FILES_STORAGE", "local").strip().lower() or "local"
FILES_STORAGE_BACKEND = env("FILES_STORAGE_BACKEND").strip()
# Downloads answer a redirect to a short-lived signed URL instead of passing through Django.
FILES_DOWNLOAD_REDIRECT = env_bool("FILES_DOWNLOAD_REDIRECT", False)
_files_storage: dict[str, Any]
if FILES_STORAGE not in {"local", "s3"}:
    raise ImproperlyConfigured(f"FILES_STORAGE must be local or s3, got {FILES_STORAGE!r}")
if FILES_STORAGE_BACKEND:
    if FILES_STORAGE != "local":
        raise ImproperlyConfigured("Set FILES_STORAGE or FILES_STORAGE_BACKEND, not both")
    try:
        _files_options = json.loads(env("FILES_STORAGE_OPTIONS", "{}"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"FILES_STORAGE_OPTIONS must be a JSON object: {exc}") from None
    if "." not in FILES_STORAGE_BACKEND or not isinstance(_files_options, dict):
        raise ImproperlyConfigured("FILES_STORAGE_BACKEND must be a dotted path and FILES_STORAGE_OPTIONS an object")
    _files_storage = {"BACKEND": FILES_STORAGE_BACKEND, "OPTIONS": _files_options}
elif FILES_STORAGE == "s3":
    if not env("AWS_STORAGE_BUCKET_NAME"):
        raise ImproperlyConfigured("FILES_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME (see .env.example)")
    _files_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("AWS_STORAGE_BUCKET_NAME"),
            "location": env("AWS_LOCATION").strip("/"),  # a prefix for every key
            "endpoint_url": env("AWS_S3_ENDPOINT_URL") or None,  # MinIO and other S3-compatible services
            "region_name": env("AWS_S3_REGION_NAME") or None,
            "addressing_style": env("AWS_S3_ADDRESSING_STYLE") or None,  # "path" for most MinIO set-ups
            "signature_version": env("AWS_S3_SIGNATURE_VERSION") or "s3v4",
            # Empty: boto3 finds credentials itself (an instance or pod role, ~/.aws).
            "access_key": env("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env("AWS_SECRET_ACCESS_KEY") or None,
            "security_token": env("AWS_SESSION_TOKEN") or None,
            # Private objects: no ACL, and every URL is signed and short-lived.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 300),
            "file_overwrite": True,
            "max_memory_size": 8 * 1024 * 1024,  # a larger download is buffered in a temporary file
        },
    }
else:
    _files_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}  # MEDIA_ROOT
STORAGES = {
    "default": _files_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},  # served by whitenoise
}

# --- Metrics -----------------------------------------------------------------
# The bearer token Prometheus sends to GET /metrics (`Authorization: Bearer <token>`); empty: only
# staff who are logged in may read it (jobs.metrics).
METRICS_TOKEN = env("METRICS_TOKEN")

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
# It connects through the queues' own client (jobs.redis_cache): the same password, TLS, Sentinel,
# socket timeouts and one-try retry; LOCATION is not used.
CACHES = {
    "default": {
        "BACKEND": "jobs.redis_cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
    }
}

# Logs: plain text (local runs) or one JSON object per line, each line about a job carrying its id
# and type (jobs.logs).
LOG_FORMAT = env("LOG_FORMAT", "plain").strip().lower() or "plain"
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {env('LOG_FORMAT')!r}")
LOG_LEVEL = env("LOG_LEVEL", "INFO").strip().upper() or "INFO"
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {env('LOG_LEVEL')!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job": {"()": "jobs.logs.JobContextFilter"}},
    "formatters": {"plain": {"()": "jobs.logs.PlainFormatter"}, "json": {"()": "jobs.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["job"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # In JSON, the web server's own lines too (those of its processes that load the site).
        **{
            name: {"handlers": ["console"], "propagate": False}
            for name in ("gunicorn.error", "gunicorn.access", "uvicorn.error", "uvicorn.access")
            if LOG_FORMAT == "json"
        },
    },
}

# --- HTTPS (production: DEBUG off) ----------------------------------------------------------
# `manage.py check --deploy` is clean with these. Django's defaults already cover the rest of its
# list: X_FRAME_OPTIONS "DENY", SECURE_CONTENT_TYPE_NOSNIFF, SECURE_REFERRER_POLICY "same-origin",
# SECURE_CROSS_ORIGIN_OPENER_POLICY "same-origin"; a short SECRET_KEY is its security.W009.
SESSION_COOKIE_HTTPONLY = True
# A proxy (load balancer, ingress) in front speaks HTTPS to browsers and plain HTTP to us.
TLS_TERMINATED_BY_PROXY = env_bool("TLS_TERMINATED_BY_PROXY", False)
# Probes and scrapers inside a cluster speak plain HTTP: never redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SILENCED_SYSTEM_CHECKS: list[str] = []
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Preloading asks browsers to hard-code HTTPS for the domain, which is slow to undo: a deployment
    # opts in (and then submits its domain to hstspreload.org); until then the warning is noise.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS.append("security.W021")
    if TLS_TERMINATED_BY_PROXY:
        # Trust the proxy's X-Forwarded-Proto (it must set it, and strip a client's): request.is_secure()
        # and the CSRF origin check then see the browser's https.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        # The proxy redirects to HTTPS and sends HSTS: the checks for our own (W008 redirect, W004
        # HSTS) would warn about what is done in front of us.
        SECURE_SSL_REDIRECT = False
        SECURE_HSTS_SECONDS = 0
        SILENCED_SYSTEM_CHECKS += ["security.W004", "security.W008"]
    else:
        SECURE_SSL_REDIRECT = True
