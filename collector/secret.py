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

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: str) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LEN} - self._values
        if fresh:
            self._values |= fresh
            # Longest first so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def child(self) -> Redactor:
        """A redactor that also knows this one's values, for one run's captures."""
        child = Redactor()
        child._values = set(self._values)
        child._pattern = self._pattern
        return child

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        if self._pattern is None or not value:
            return value
        return self._pattern.sub(MASK, value)

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
