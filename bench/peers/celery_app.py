"""The Celery peer: `celery -A bench.peers.celery_app worker -P prefork -c 2`.

DJANGO_SETTINGS_MODULE is `bench.peers.celery_settings` (set here when missing).

Celery's Django fix-up sets Django up in the worker, closes the connections before forking the
children and, after each task, keeps a connection that `CONN_MAX_AGE` allows (None: reused).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready

from bench.peers import common

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.celery_settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="bench.noop")
def noop() -> None:
    common.noop()


@app.task(name="bench.cpu5")
def cpu5() -> None:
    common.cpu5()


@app.task(name="bench.stamp")
def stamp(token: str) -> None:
    common.stamp(token)


@worker_ready.connect
def _ready(**_: object) -> None:
    print("bench: celery worker ready", flush=True)
