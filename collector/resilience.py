"""Circuit breakers, one per target host.

After `failures` consecutive connection failures to a host, runs that would
reach it are skipped (result ``skipped``) for `cool_down`. Then one run is let
through to try the host (half-open): a response closes the breaker, another
connection failure opens it for a new cool-down.

Retry backoff lives with its settings in `collector.config.RetryPolicy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["CircuitBreakers", "CircuitOpen", "CircuitState"]

CircuitState = Literal["closed", "open", "half_open"]


class CircuitOpen(Exception):
    def __init__(self, target: str, retry_in: float) -> None:
        super().__init__(f"circuit open for {target}: skipped for {retry_in:.0f}s more")
        self.target = target


@dataclass
class _Breaker:
    failures: int = 0
    state: CircuitState = "closed"
    opened_at: float = 0.0
    trial_started: float = 0.0


class CircuitBreakers:
    def __init__(self, failures: int = 5, cool_down: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.cool_down = cool_down
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}

    def configure(self, failures: int, cool_down: float) -> None:
        """Apply new settings on reload, keeping each host's state."""
        self.threshold, self.cool_down = failures, cool_down

    def before_request(self, target: str) -> None:
        """Raise CircuitOpen unless a request to `target` may go now."""
        breaker = self._breakers.get(target)
        if breaker is None or breaker.state == "closed":
            return
        now = self._clock()
        if breaker.state == "open":
            waited = now - breaker.opened_at
            if waited < self.cool_down:
                raise CircuitOpen(target, self.cool_down - waited)
            breaker.state, breaker.trial_started = "half_open", now
            return
        # Half-open: one trial is out. If it never reports (its run was skipped
        # elsewhere), let another through after a cool-down.
        if now - breaker.trial_started < self.cool_down:
            raise CircuitOpen(target, self.cool_down - (now - breaker.trial_started))
        breaker.trial_started = now

    def record_success(self, target: str) -> None:
        breaker = self._breakers.get(target)
        if breaker is not None:
            breaker.failures, breaker.state = 0, "closed"

    def record_failure(self, target: str) -> None:
        breaker = self._breakers.setdefault(target, _Breaker())
        breaker.failures += 1
        if breaker.state == "half_open" or breaker.failures >= self.threshold:
            breaker.state, breaker.opened_at = "open", self._clock()

    def states(self) -> dict[str, CircuitState]:
        return {target: b.state for target, b in self._breakers.items()}
