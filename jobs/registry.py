"""The job-type registry: the only things that can run.

A job type maps a name to its function, its params schema (a pydantic model),
its queue, its retry policy and its timeout. Nothing from a request ever names
a Python callable: callers name a registered type.

Add a type from any module of your own::

    from pydantic import BaseModel
    from jobs.registry import RetryPolicy, job_type

    class ResizeParams(BaseModel):
        image_id: int

    @job_type("resize", params=ResizeParams, queue="low", retry=RetryPolicy(max_attempts=5))
    def resize(params: ResizeParams) -> dict:
        ...

and list the module in the `JOBS_MODULES` setting, or name it `job_types.py`
inside any installed app: both are imported at start-up.

A param that is a secret (a password, a token) is declared with `secret()`
(``password: str = secret()``) or typed `SecretStr`: the job gets the real
value, and the API, the admin and the Jobs page show `SECRET_MASK` instead:
see `JobType.masked`.
"""

from __future__ import annotations

import json
import random
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from jobs import queues
from jobs.errors import InvalidParams, UnknownJobType

#: Params of a job request may not be bigger than this, serialized.
MAX_PARAMS_BYTES = 64 * 1024
#: Params may not nest lists and objects deeper than this (the params object itself is level 1).
MAX_PARAMS_DEPTH = 32
#: What a secret param shows instead of its value, wherever a person or a log could see it.
SECRET_MASK = "********"
#: The `json_schema_extra` key that marks a param secret (what `secret()` sets).
SECRET = "secret"


def secret(default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """A secret param (a password, a token): ``password: str = secret()``.

    The job receives the value as given and the row keeps it (a retry needs it),
    but the API, the admin and the Jobs page show `SECRET_MASK`; the
    type's JSON schema marks it ``"writeOnly": true, "format": "password"`` and
    the create forms ask for it in a password input. Takes `Field`'s arguments:
    ``token: str | None = secret(default=None, description="API token")``.
    Only top-level params can be secret.
    """
    return Field(default, json_schema_extra={SECRET: True}, **kwargs)


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest deeper than `limit` (`value` itself is level 1).

    A loop, not recursion: params too deep for Python's stack get an answer too."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _is_secret(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return (isinstance(extra, dict) and extra.get(SECRET) is True) or _is_secret_str(info.annotation)


def _is_secret_str(annotation: Any) -> bool:
    """`SecretStr`, or an optional one (`SecretStr | None`)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_secret_str(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, SecretStr)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Attempt n (n >= 2) waits ``min(cap, base * factor ** (n - 2))`` seconds after
    attempt n - 1 failed, scaled by a random factor in ``[1 - jitter, 1 + jitter]``
    so that jobs failing together do not retry together.
    """

    max_attempts: int = 3
    base: float = 5.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.2
    #: Retry automatically when the worker died (abandoned) or Redis lost the job.
    #: Leave off for jobs that must not run twice (the first run may have done its work).
    retry_lost: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter < 1:
            raise ValueError("need base >= 0, factor >= 1, cap >= 0 and 0 <= jitter < 1")

    def delay(self, retry_number: int, rng: random.Random | None = None) -> int:
        """Seconds to wait before retry number `retry_number` (1 = the second attempt)."""
        raw = min(self.cap, self.base * self.factor ** (retry_number - 1))
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        # RQ schedules whole seconds; 0 would mean "right away", which is not a backoff.
        return max(1, round(raw * spread))

    def delays(self, rng: random.Random | None = None) -> list[int]:
        """The waits before each retry of one job, drawn once when it is enqueued."""
        return [self.delay(n, rng) for n in range(1, self.max_attempts)]


@dataclass(frozen=True)
class JobType:
    name: str
    func: Callable[[Any], Any]
    params: type[BaseModel]
    queue: str = queues.DEFAULT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: int = 600
    description: str = ""
    #: Schedules declared next to the type (`job_type(..., schedules=[...])`): the entries of
    #: `JOBS_SCHEDULES` without their "type".
    schedules: tuple[dict[str, Any], ...] = ()

    def validate(self, raw: Any) -> dict[str, Any]:
        """Return the params as they will be stored and passed, or raise InvalidParams."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InvalidParams({"params": ["must be a JSON object"]})
        if _nesting_exceeds(raw, MAX_PARAMS_DEPTH):
            raise InvalidParams({"params": [f"must not nest lists and objects over {MAX_PARAMS_DEPTH} levels deep"]})
        size = len(json.dumps(raw, default=str))
        if size > MAX_PARAMS_BYTES:
            raise InvalidParams({"params": [f"must be at most {MAX_PARAMS_BYTES} bytes as JSON, not {size}"]})
        model = self.parse(raw)
        dumped = model.model_dump(mode="json")
        for name in self.secret_params & dumped.keys():
            value = getattr(model, name, None)
            if isinstance(value, SecretStr):
                dumped[name] = value.get_secret_value()  # stored as given: the job needs it
        return dumped

    def parse(self, raw: Any) -> BaseModel:
        """The params as the job's function takes them (its params model), or raise InvalidParams.

        The error says which params are wrong and why, never what they hold: pydantic's own
        text quotes the input, secrets included, and would end up in a traceback or a log."""
        try:
            return self.params.model_validate(raw)
        except ValidationError as exc:
            errors: dict[str, list[str]] = {}
            for error in exc.errors(include_input=False, include_context=False, include_url=False):
                where = ".".join(str(part) for part in error["loc"]) or "params"
                errors.setdefault(where, []).append(error["msg"])
            raise InvalidParams(errors) from None

    @cached_property
    def secret_params(self) -> frozenset[str]:
        """The names (and aliases) of the params shown as `SECRET_MASK`."""
        names: set[str] = set()
        for name, info in self.params.model_fields.items():
            if _is_secret(info):
                names.add(name)
                aliases = (info.alias, info.validation_alias, info.serialization_alias)
                names.update(alias for alias in aliases if isinstance(alias, str))
        return frozenset(names)

    def masked(self, params: Any) -> Any:
        """The params as a person or a log may see them: every secret one's value is `SECRET_MASK`
        (an unset one, None, stays None)."""
        if not self.secret_params or not isinstance(params, dict):
            return params
        return {
            key: SECRET_MASK if key in self.secret_params and value is not None else value
            for key, value in params.items()
        }

    def json_schema(self) -> dict[str, Any]:
        """The params' JSON Schema; secret params are marked ``"writeOnly": true, "format": "password"``."""
        schema = self.params.model_json_schema()
        for name, prop in schema.get("properties", {}).items():
            if name in self.secret_params and isinstance(prop, dict):
                prop.pop(SECRET, None)
                prop.update({"writeOnly": True, "format": "password"})
        return schema


_registry: dict[str, JobType] = {}


def job_type(
    name: str,
    *,
    params: type[BaseModel],
    queue: str = queues.DEFAULT,
    retry: RetryPolicy | None = None,
    timeout: int = 600,
    description: str = "",
    schedules: Sequence[dict[str, Any]] = (),
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register the decorated function as the job type `name`.

    `schedules`: recurring runs of the type, declared with it; each as an entry of `JOBS_SCHEDULES`
    without its "type" (`{"name": "nightly report", "cron": "0 2 * * *", "params": {...}}`). The
    active scheduler makes them exist, and they appear in the admin (`jobs.schedules.sync_declared`).
    """
    if queue not in queues.QUEUE_NAMES:
        raise ValueError(f"job type {name!r}: unknown queue {queue!r}")
    if timeout < 1:
        raise ValueError(f"job type {name!r}: timeout must be at least 1 second")

    def register(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        existing = _registry.get(name)
        # Re-importing the same module is harmless; two functions under one name is a bug.
        if existing is not None and _origin(existing.func) != _origin(func):
            raise ValueError(f"job type {name!r} is already registered by {existing.func.__module__}")
        _registry[name] = JobType(
            name=name,
            func=func,
            params=params,
            queue=queue,
            retry=retry or RetryPolicy(),
            timeout=timeout,
            description=description or (func.__doc__ or "").strip().split("\n")[0],
            schedules=tuple(dict(entry) for entry in schedules),
        )
        return func

    return register


def _origin(func: Callable[[Any], Any]) -> tuple[str, str]:
    return func.__module__, func.__qualname__


def get(name: Any) -> JobType:
    if not isinstance(name, str) or name not in _registry:
        known = ", ".join(sorted(_registry))
        raise UnknownJobType(f"unknown job type {name!r}; known types: {known}")
    return _registry[name]


def declared_schedules() -> list[dict[str, Any]]:
    """The schedules declared next to the registered types, as entries of `JOBS_SCHEDULES`."""
    return [{**entry, "type": spec.name} for spec in _registry.values() for entry in spec.schedules]


def find(name: Any) -> JobType | None:
    """The registered type of that name, or None."""
    return _registry.get(name) if isinstance(name, str) else None


def masked_params(type_name: str, params: Any) -> Any:
    """A job's params as a person or a log may see them: see `JobType.masked`.

    A type no longer registered has no known secrets: its params are shown as stored."""
    spec = _registry.get(type_name)
    return params if spec is None else spec.masked(params)


def searchable_params(type_name: str, params: Any) -> Any:
    """What search may read of a job's params (`jobs.models.Job.search_params`): None when they
    hold no secret (search reads them as stored), else the params with every secret masked.

    A type no longer registered has no known secrets, as in `masked_params`."""
    spec = _registry.get(type_name)
    if spec is None or not isinstance(params, dict) or not spec.secret_params & params.keys():
        return None
    return spec.masked(params)


def names() -> frozenset[str]:
    return frozenset(_registry)


def all_types() -> list[JobType]:
    return [_registry[name] for name in sorted(_registry)]
