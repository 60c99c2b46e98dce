"""The log handler: JSON lines on the stderr of the moment."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from collector.log import configure_logging


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_the_log_follows_stderr_when_it_is_replaced_and_the_old_one_closed(root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", before)
    configure_logging("info")
    before.close()  # as pytest closes a test's captured stderr while a collector thread from a fixture still logs
    monkeypatch.setattr(sys, "stderr", after)
    logging.getLogger("flowprobe.test").info("still heard", extra={"fields": {"workflow": "health-check"}})
    line = json.loads(after.getvalue())
    assert (line["msg"], line["workflow"], line["level"]) == ("still heard", "health-check", "info")
