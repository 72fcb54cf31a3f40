"""The production benchmark, in one command: worker scaling and Postgres connections, then pruning.

    .venv/bin/python bench/production.py            # about 10 minutes on 2 cores
    .venv/bin/python bench/production.py --quick    # 2 repetitions, 200,000 rows: about 4 minutes

Runs `bench/machines.py` (throughput with 1, 2 and 4 worker processes as ratios of one, the
Postgres connections each role holds) and then `bench/prune.py` (the pruning rate in rows per
second on 1,000,000 rows, and the API's p95 during the prune as a ratio of its p95 before), each
in a process of its own, and prints both reports. See bench/README.md for each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repetitions of the scaling runs, 200,000 rows to prune")
    args = parser.parse_args()
    steps = [
        [str(BENCH / "machines.py"), *(["--repeats", "2"] if args.quick else [])],
        [str(BENCH / "prune.py"), *(["--rows", "200000"] if args.quick else [])],
    ]
    status = 0
    for step in steps:
        print(f"\n=== {Path(step[0]).name} {' '.join(step[1:])}".rstrip(), flush=True)
        status = max(status, subprocess.call([sys.executable, *step], cwd=BENCH.parent))
    return status


if __name__ == "__main__":
    sys.exit(main())
