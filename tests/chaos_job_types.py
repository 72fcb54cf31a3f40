"""Every job type writes its runs to the run log: for the chaos run (`tests/chaos/`) only.

Listed in `JOBS_MODULES` after `tests.fault_job_types`, it wraps the function of
every registered type (the built-in ones, `email`, `example`, `report` and
`bulk_action`, and the fault types that do not log their runs themselves) in
`tests.fault_job_types.logged_run`: each run of any job writes its start, any
other run of the same job still under way, and how it ended, to the file named
by `FAULTS_RUN_LOG`. What the functions do is unchanged. Importing this module
changes the registry of the process that imports it: never import it in a test.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from jobs import registry
from tests import fault_job_types

#: These write their runs themselves.
LOGGING_ALREADY = frozenset({fault_job_types.RECORD, fault_job_types.RECORD_ONCE})


def logged(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(func)
    def run(params: Any) -> Any:
        with fault_job_types.logged_run():
            return func(params)

    run.logs_its_runs = True  # type: ignore[attr-defined]
    return run


def log_every_run() -> None:
    for name, spec in list(registry._registry.items()):
        if name not in LOGGING_ALREADY and not getattr(spec.func, "logs_its_runs", False):
            registry._registry[name] = dataclasses.replace(spec, func=logged(spec.func))


log_every_run()
