"""The chaos run, short (50 s of chaos), once: `python -m tests.chaos` with a fixed seed (tests/chaos/).

It starts its own redis-server and PostgreSQL cluster, so it needs neither the
test database nor the test Redis. Any violation fails the test, naming the
mended defect it looks like, if any (tests/chaos/checks.py `DEFECTS`). The whole
report is printed (pytest -rP); docs/faults.md ("The chaos run") says more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fault_servers import BASE_DIR, POSTGRES_BIN, REDIS_SERVER

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEED = 5
SECONDS = 50


@pytest.mark.timeout(600)
def test_a_short_seeded_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    if REDIS_SERVER is None or not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"needs redis-server on the PATH and PostgreSQL's server binaries in {POSTGRES_BIN}")
    args = ["--seed", str(SEED), "--seconds", str(SECONDS), "--settle", "150", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=560,
    )
    print(done.stdout)
    print(done.stderr[-5000:], file=sys.stderr)
    report_file = tmp_path / "report.json"
    assert report_file.exists(), f"the chaos run broke (exit {done.returncode}): {done.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    violations = report["violations"]
    assert not violations, "\n".join(
        f"{v['check']}: {v['type']} {v['job']}: {v['what']}"
        + (f" (the defect {v['defect']!r} is back)" if v["defect"] else "")
        + lines_naming(tmp_path, v["job"])
        for v in violations
    )
    assert done.returncode == 0, done.stderr[-3000:]


def lines_naming(out: Path, job_id: str | None, most: int = 40) -> str:
    """The processes' log lines that name a job, in time order (each starts with its time): the run's
    directory is gone once pytest rotates its temporary directories, so a failure carries them. None
    for a violation that names no one job (a registry's leftovers: its text names them)."""
    if not job_id:
        return ""
    named = []
    for log in [*out.glob("logs/*.log"), *out.glob("*.log")]:
        with open(log, errors="replace") as text:
            named += [(line, log.name) for line in text if job_id in line]
    found = [f"    {name}: {line.rstrip()[:300]}" for line, name in sorted(named)]
    if len(found) > most:
        found = [*found[: most // 2], f"    ... {len(found) - most} more ...", *found[-most // 2 :]]
    return "".join(f"\n{line}" for line in found)
