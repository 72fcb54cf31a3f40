"""The chaos run: thousands of jobs of every type while processes and servers are killed at random moments.

    .venv/bin/python -m tests.chaos --seed 42 --minutes 3

It starts a `redis-server` of its own with an append-only file (`appendfsync
always`: a restart, even after SIGKILL, keeps every write Redis acknowledged, so
whatever goes wrong is the product's, not a second of lost writes), a PostgreSQL
cluster of its own, workers, schedulers and gunicorn, and drives them for the
given time: a load thread creates jobs of every registered type through
`jobs.services` and through the API (some in a transaction, a few rolled back)
and takes random actions on them (retry, cancel, stop, promote, remove, bulk
actions); the driver, at random moments drawn from `random.Random(seed)`, kills
work horses and workers with SIGKILL (and restarts them), restarts Redis and
PostgreSQL, hangs Redis, pauses the schedulers with SIGSTOP and kills them.
After a settle period it checks what the history says against what the workers
did (every run of every job is logged: `tests.chaos_job_types`), prints the seed,
the driver's event log, a summary and every violation, and exits 1 on any.

The same seed replays the same plan: the same job mix, the same actions and the
same faults at the same moments (what they hit still depends on timing).
docs/faults.md ("Chaos run") says what it checks and what it found.

`__main__` sets the environment up before Django reads its settings; `run` drives;
`checks` judges.
"""
