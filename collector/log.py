"""Structured logs: one JSON object per line, secrets masked at the handler.

Each finished run is one line (``"msg": "run"``) with its workflow, env,
result, duration, failed step and reason, so logs can be grepped or shipped
to Loki without parsing prose.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from collector.result import RunResult
from collector.secret import RedactingFilter, global_redactor

__all__ = ["JsonFormatter", "configure_logging", "log_run"]

run_log = logging.getLogger("flowprobe.run")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        for key, value in (fields or {}).items():
            # A field never hides the line's own ts, level, logger or msg.
            entry[f"field_{key}" if key in entry else key] = value
        if record.exc_info:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the sys.stderr of the moment, not the one at start: a test harness swaps it and closes the old one."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # set by StreamHandler.__init__; the property always answers sys.stderr


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(global_redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs are per request, not per run; keep them out of the run log.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; URLs can carry rendered templates.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def log_run(result: RunResult) -> None:
    level = logging.INFO if result.outcome in ("success", "skipped") else logging.WARNING
    if not run_log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "workflow": result.workflow,
        "env": result.env,
        "result": result.outcome,
        "duration_ms": round(result.duration * 1000, 1),
        "run_id": result.run_id,
        "attempts": result.attempts,
    }
    if result.flaky:
        fields["flaky"] = True
    if result.failed_step:
        fields.update(step=result.failed_step, reason=result.reason)
    if result.message:
        fields["message"] = result.message
    if result.skip_reason:
        fields["skip_reason"] = result.skip_reason
    run_log.log(level, "run", extra={"fields": fields})
