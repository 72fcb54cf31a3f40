"""`python -m tests.chaos`: the environment first (the settings read it once), then Django, then the run."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from tests.fault_servers import BASE_DIR, POSTGRES_BIN, REDIS_SERVER, closed_port

#: The Redis database the run's processes use, on the run's own redis-server.
REDIS_DB = 11
#: Every write Redis acknowledges is on disk first: see tests/chaos/__init__.py.
APPENDFSYNC = "always"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="The chaos run: jobs of every type while processes and servers are killed at random "
        "moments, then checked (tests/chaos/__init__.py, docs/faults.md).",
    )
    parser.add_argument("--seed", type=int, default=None, help="Replays a run (default: a new one, printed).")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=None, help="Chaos time (default 3).")
    length.add_argument("--seconds", type=float, default=None, help="Chaos time in seconds.")
    parser.add_argument("--workers", type=int, default=4, help="RQ workers (default 4, at least 2).")
    parser.add_argument("--schedulers", type=int, default=2, help="Scheduler processes (default 2).")
    parser.add_argument("--rate", type=float, default=25.0, help="Jobs created per second, at most (default 25).")
    parser.add_argument(
        "--settle", type=float, default=240.0, help="Seconds at most for every job to end afterwards (default 240)."
    )
    parser.add_argument("--out", type=Path, default=None, help="Where logs and report.json go (default var/chaos/).")
    parser.add_argument("--keep", action="store_true", help="Keep the PostgreSQL cluster's directory.")
    args = parser.parse_args(argv)
    args.chaos_seconds = args.seconds if args.seconds is not None else 60 * (args.minutes or 3.0)
    if args.workers < 2:
        parser.error("--workers must be at least 2")
    if args.schedulers < 1:
        parser.error("--schedulers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if REDIS_SERVER is None or not (POSTGRES_BIN / "initdb").exists():
        print(f"needs redis-server on the PATH and PostgreSQL's server binaries in {POSTGRES_BIN}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    out = args.out or BASE_DIR / "var" / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    redis_port, postgres_port = closed_port(), closed_port()
    database = f"chaos_seed{seed}"
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "queueproject.settings",
            "ENV_FILE": str(out / "no.env"),  # not the project's .env: only what is set here
            "DEBUG": "false",
            "SECRET_KEY": "chaos-run-secret-key",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1,http://localhost",
            "TLS_TERMINATED_BY_PROXY": "true",  # plain HTTP on loopback: no redirect to HTTPS
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{postgres_port}/{database}",
            "DB_POOL": "false",  # gunicorn (tests.fault_servers.Web) sets its own
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/{REDIS_DB}",
            "JOBS_MODULES": "tests.fault_job_types,tests.chaos_job_types",
            "FAULTS_RUN_LOG": str(out / "runs.log"),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(out / "mail"),
            "MEDIA_ROOT": str(out / "media"),
            # As the fault suite runs: a dead worker's job is due to be judged within 6 + 2 + 1 s.
            "JOBS_WORKER_DEAD_AFTER": "6",
            "JOBS_RECONCILE_INTERVAL": "2",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.pop("PYTEST_XDIST_WORKER", None)
    import django

    django.setup()

    from tests.chaos.run import ChaosRun

    run = ChaosRun(
        seed=seed,
        seconds=args.chaos_seconds,
        workers=args.workers,
        schedulers=args.schedulers,
        rate=args.rate,
        settle=args.settle,
        out=out,
        redis_port=redis_port,
        redis_db=REDIS_DB,
        appendfsync=APPENDFSYNC,
        postgres_port=postgres_port,
        database=database,
        keep=args.keep,
        argv=sys.argv[1:] if argv is None else argv,
    )
    return run.main()


if __name__ == "__main__":
    sys.exit(main())
