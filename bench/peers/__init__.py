"""What `bench/workers.py` runs: the job functions, the product's bench job types, and the peers' apps.

`common` holds the three jobs every system runs (a no-op, 5 ms of CPU, a start stamp) with no
Django import; `product_jobs` registers them as the product's job types; `celery_app` and
`celery_settings` are the Celery side, `djangoq_settings` the django-q2 side (both import only
the peers' packages, installed in their own venv from `bench/requirements-peers.txt`); `agent` is
the process that enqueues, counts and times for one system and one database.
"""
