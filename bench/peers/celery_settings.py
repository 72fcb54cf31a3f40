"""Django settings for the Celery peer: django-celery-results stores every task's result (`TaskResult`)."""

from __future__ import annotations

from bench.peers.peer_settings import REDIS_URL, common

globals().update(common(["django_celery_results"]))

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = "django-db"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "bench"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
