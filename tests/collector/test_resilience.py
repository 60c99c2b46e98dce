"""Circuit breakers with an injected clock, and the retry backoff they sit beside."""

from __future__ import annotations

import random

import pytest

from collector.config import RetryPolicy
from collector.resilience import CircuitBreakers, CircuitOpen

HOST = "api.test:443"


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def breakers(failures: int = 3, cool_down: float = 60.0) -> tuple[CircuitBreakers, Clock]:
    clock = Clock()
    return CircuitBreakers(failures, cool_down, clock=clock), clock


def is_open(cb: CircuitBreakers, target: str = HOST) -> bool:
    try:
        cb.before_request(target)
    except CircuitOpen:
        return True
    return False


def test_opens_after_n_consecutive_failures() -> None:
    cb, _ = breakers(failures=3)
    assert not is_open(cb)
    for _ in range(2):
        cb.record_failure(HOST)
        assert not is_open(cb)
    cb.record_failure(HOST)
    assert cb.states() == {HOST: "open"}
    with pytest.raises(CircuitOpen, match=r"^circuit open for api.test:443: skipped for 60s more$") as raised:
        cb.before_request(HOST)
    assert raised.value.target == HOST


def test_a_response_resets_the_count() -> None:
    cb, _ = breakers(failures=3)
    cb.record_failure(HOST)
    cb.record_failure(HOST)
    cb.record_success(HOST)
    cb.record_failure(HOST)
    cb.record_failure(HOST)
    assert cb.states() == {HOST: "closed"}
    cb.record_failure(HOST)
    assert cb.states() == {HOST: "open"}


def test_after_the_cool_down_one_trial_goes_through_and_success_closes() -> None:
    cb, clock = breakers(failures=1, cool_down=60)
    cb.record_failure(HOST)
    clock.now += 59.9
    assert is_open(cb)
    clock.now += 0.1
    assert not is_open(cb)  # the trial
    assert cb.states() == {HOST: "half_open"}
    assert is_open(cb)  # only one trial at a time
    cb.record_success(HOST)
    assert cb.states() == {HOST: "closed"}
    assert not is_open(cb)
    cb.record_failure(HOST)  # the count started again from zero
    assert cb.states() == {HOST: "open"}


def test_a_failed_trial_reopens_for_a_full_cool_down() -> None:
    cb, clock = breakers(failures=5, cool_down=60)
    for _ in range(5):
        cb.record_failure(HOST)
    clock.now += 60
    assert not is_open(cb)
    clock.now += 10
    cb.record_failure(HOST)  # one failure is enough in half-open
    assert cb.states() == {HOST: "open"}
    clock.now += 59
    with pytest.raises(CircuitOpen, match="skipped for 1s more"):
        cb.before_request(HOST)
    clock.now += 1
    assert not is_open(cb)


def test_a_trial_that_never_reports_is_replaced_after_a_cool_down() -> None:
    cb, clock = breakers(failures=1, cool_down=30)
    cb.record_failure(HOST)
    clock.now += 30
    assert not is_open(cb)
    clock.now += 29
    assert is_open(cb)
    clock.now += 1
    assert not is_open(cb)
    assert cb.states() == {HOST: "half_open"}


def test_hosts_are_independent() -> None:
    cb, _ = breakers(failures=1)
    cb.record_failure("a.test:80")
    assert is_open(cb, "a.test:80")
    assert not is_open(cb, "a.test:8080")
    assert not is_open(cb, "b.test:80")
    cb.record_success("b.test:80")  # a success for a host never seen adds nothing
    assert cb.states() == {"a.test:80": "open"}


def test_configure_keeps_state() -> None:
    cb, clock = breakers(failures=2, cool_down=60)
    cb.record_failure(HOST)
    cb.configure(failures=1, cool_down=10)
    cb.record_failure(HOST)
    assert cb.states() == {HOST: "open"}
    clock.now += 10
    assert not is_open(cb)


# ---------------------------------------------------------------- backoff


def test_exponential_backoff_with_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy.model_validate({"attempts": 6, "initial": "200ms", "max": "1s"})
    assert [policy.delay(n, 1.0) for n in range(1, 6)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.delay(3, 0.5) == pytest.approx(0.4)
    assert policy.delay(3, 0.0) == 0.0
    rng, again = random.Random(42), random.Random(42)
    assert [policy.delay(n, rng.random()) for n in (1, 2, 3)] == [min(1.0, 0.2 * 2 ** (n - 1)) * again.random() for n in (1, 2, 3)]


def test_constant_backoff_is_jittered_and_capped_too() -> None:
    policy = RetryPolicy.model_validate({"backoff": "constant", "initial": "2s", "max": "5s"})
    assert [policy.delay(n, 0.5) for n in (1, 2, 7)] == [1.0, 1.0, 1.0]
    capped = RetryPolicy.model_validate({"backoff": "constant", "initial": "2s", "max": "1s"})
    assert capped.delay(1, 0.9) == pytest.approx(0.9)
