"""What a run produced: plain data, never an exception.

A failing target is data (blackbox_exporter's probe_success=0, Gatus's
result errors). These objects are what the history stores, the metrics
collector reads and the API returns, already redacted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["OUTCOMES", "REASONS", "CheckFailure", "Outcome", "Reason", "RunResult", "StepResult"]

Outcome = Literal["success", "failure", "error", "skipped"]
Reason = Literal["status", "assertion", "timeout", "connect", "tls", "capture"]
OUTCOMES: tuple[Outcome, ...] = ("success", "failure", "error", "skipped")
REASONS: tuple[Reason, ...] = ("status", "assertion", "timeout", "connect", "tls", "capture")


@dataclass(frozen=True)
class CheckFailure:
    """One failed expectation: why, what was checked, and what was seen."""

    reason: Reason
    check: str
    message: str


@dataclass
class StepResult:
    name: str
    outcome: Outcome
    status: int | None = None
    duration: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    failures: list[CheckFailure] = field(default_factory=list)
    captures: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    message: str = ""
    cert_not_after: float | None = None
    started_at: float | None = None  # unix time the step's (last) request began; None if never sent
    host: str | None = None  # host:port the request went to (the circuit-breaker key); None if never sent

    @property
    def reason(self) -> Reason | None:
        return self.failures[0].reason if self.failures else None


@dataclass
class RunResult:
    workflow: str
    env: str
    run_id: str
    started_at: float
    outcome: Outcome
    duration: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    attempts: int = 1
    flaky: bool = False
    failed_step: str | None = None
    reason: Reason | None = None
    message: str = ""
    skip_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What `dataclasses.asdict` gives, written out: asdict took about 35 us for a
        one-step run (it deep-copies field by field), on the path of every run recorded."""
        return {
            "workflow": self.workflow,
            "env": self.env,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "outcome": self.outcome,
            "duration": self.duration,
            "steps": [_step_dict(s) for s in self.steps],
            "attempts": self.attempts,
            "flaky": self.flaky,
            "failed_step": self.failed_step,
            "reason": self.reason,
            "message": self.message,
            "skip_reason": self.skip_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        steps = [
            StepResult(**{**s, "failures": [CheckFailure(**f) for f in s.get("failures", [])]}) for s in data.get("steps", [])
        ]
        return cls(**{**data, "steps": steps})


def _step_dict(step: StepResult) -> dict[str, Any]:
    return {
        "name": step.name,
        "outcome": step.outcome,
        "status": step.status,
        "duration": step.duration,
        "phases": _plain(step.phases),
        "failures": [{"reason": f.reason, "check": f.check, "message": f.message} for f in step.failures],
        "captures": _plain(step.captures),
        "attempts": step.attempts,
        "message": step.message,
        "cert_not_after": step.cert_not_after,
        "started_at": step.started_at,
        "host": step.host,
    }


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """A copy of `value` as asdict makes one: containers rebuilt, scalars shared, anything else deep-copied."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return type(value)((_plain(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return copy.deepcopy(value)
