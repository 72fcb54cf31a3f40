"""The job-type registry and the retry policy."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel

from jobs import registry
from jobs.errors import InvalidParams, UnknownJobType
from jobs.registry import RetryPolicy, job_type


def test_the_built_in_types_are_registered_with_their_queues():
    types = {spec.name: spec for spec in registry.all_types()}
    assert {"example", "email", "report"} <= set(types)
    assert (types["example"].queue, types["email"].queue, types["report"].queue) == ("default", "high", "low")
    assert types["email"].retry.retry_lost is False


def test_it_rejects_unknown_job_type_naming_the_known_ones():
    with pytest.raises(UnknownJobType) as caught:
        registry.get("builtins.eval")
    assert "example" in caught.value.errors["type"][0]
    with pytest.raises(UnknownJobType):
        registry.get(None)


def test_params_are_validated_and_normalised():
    spec = registry.get("example")
    assert spec.validate(None)["duration"] == 5.0
    assert spec.validate({"duration": "2"})["duration"] == 2.0
    with pytest.raises(InvalidParams) as caught:
        spec.validate({"duration": 1e9, "steps": 0})
    assert set(caught.value.errors) == {"params.duration", "params.steps"}


def test_the_params_schema_is_json_schema_for_building_forms():
    schema = registry.get("email").json_schema()
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"to", "subject", "body"}


@pytest.fixture
def scratch_registry(monkeypatch):
    """Types registered by a test disappear after it."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))


def test_a_user_registers_a_type_with_one_decorator(scratch_registry):
    class Params(BaseModel):
        n: int

    @job_type("test-double", params=Params, queue="low", retry=RetryPolicy(max_attempts=1), timeout=5)
    def double(params: Params) -> int:
        return params.n * 2

    spec = registry.get("test-double")
    assert (spec.queue, spec.timeout, spec.retry.max_attempts) == ("low", 5, 1)
    assert spec.func(Params(n=21)) == 42


def test_a_second_function_under_a_taken_name_is_refused():
    class Params(BaseModel):
        pass

    with pytest.raises(ValueError, match="already registered"):

        @job_type("example", params=Params)
        def impostor(params: Params) -> None:
            return None


def test_unknown_queue_is_refused_at_registration():
    class Params(BaseModel):
        pass

    with pytest.raises(ValueError, match="unknown queue"):
        job_type("x", params=Params, queue="urgent")


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter():
    policy = RetryPolicy(max_attempts=6, base=10, factor=2, cap=60, jitter=0)
    assert policy.delays() == [10, 20, 40, 60, 60]
    jittered = RetryPolicy(max_attempts=2, base=100, jitter=0.2)
    draws = {jittered.delay(1, random.Random(seed)) for seed in range(50)}
    assert min(draws) >= 80
    assert max(draws) <= 120
    assert len(draws) > 10  # jobs failing together spread out


def test_a_retry_never_waits_zero_seconds():
    assert RetryPolicy(max_attempts=3, base=0).delays() == [1, 1]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"factor": 0.5}, {"jitter": 1.5}, {"base": -1}])
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"must be|need"):
        RetryPolicy(**kwargs)
