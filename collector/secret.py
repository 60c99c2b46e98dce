"""Secrets: resolved from the environment or files, redacted everywhere.

A workflow names its secrets (``secrets: {PROBE_PASSWORD: {env: PROBE_PASSWORD}}``)
and never holds their values. Every string that leaves the collector (logs,
results, the API, error messages) goes through a Redactor that knows the
resolved values and the values of captures marked ``secret: true``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "Redactor", "RedactingFilter", "global_redactor"]

MASK = "[REDACTED]"

# Values this short would redact ordinary words; real secrets are longer.
_MIN_SECRET_LEN = 4


class Redactor:
    """Replaces known secret values in strings and nested data."""

    def __init__(self, values: Iterable[str] = (), *, parent: Redactor | None = None) -> None:
        self._values: set[str] = set()
        self._ordered: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self._parent = parent
        self.add(*values)

    def add(self, *values: str) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LEN} - self._values
        if self._parent is not None:
            fresh = {v for v in fresh if not self._parent.knows(v)}
        if fresh:
            self._values |= fresh
            # Longest first so a secret that contains another is masked whole.
            self._ordered = sorted(self._values, key=len, reverse=True)
            if self._parent is None:
                self._pattern = re.compile("|".join(re.escape(v) for v in self._ordered))

    def knows(self, value: str) -> bool:
        return value in self._values or (self._parent is not None and self._parent.knows(value))

    def child(self) -> Redactor:
        """A redactor for one run: it adds that run's secret captures without
        copying or recompiling this one's pattern, which serves every run."""
        return Redactor(parent=self)

    def __bool__(self) -> bool:
        return bool(self._values) or bool(self._parent)

    def text(self, value: str) -> str:
        if not value:
            return value
        if self._parent is not None:
            # A run knows a handful of values: plain replacement beats compiling a pattern per run.
            for secret in self._ordered:
                value = value.replace(secret, MASK)
            return self._parent.text(value)
        return self._pattern.sub(MASK, value) if self._pattern is not None else value

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record that passes through a handler."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            record.msg = self.redactor.text(record.getMessage())
            record.args = None
            fields = getattr(record, "fields", None)
            if fields is not None:
                record.fields = self.redactor.data(fields)
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redactor.text(logging.Formatter().formatException(record.exc_info))
        return True


# One process-wide redactor: every secret the config loader resolves is added,
# so no log line anywhere can carry one, whichever module logs it.
global_redactor = Redactor()
