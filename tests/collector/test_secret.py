"""The redactor: process-wide values, per-run children, and the logging filter."""

from __future__ import annotations

import io
import json
import logging

from collector.log import JsonFormatter
from collector.secret import MASK, RedactingFilter, Redactor


def test_a_run_child_masks_its_own_and_its_parents_values_without_teaching_the_parent() -> None:
    parent = Redactor(["hunter2-password"])
    child = parent.child()
    child.add("tok-123456", "abc")  # too short to be a secret: ordinary words stay
    assert child.text("pw=hunter2-password token=tok-123456 abc") == f"pw={MASK} token={MASK} abc"
    assert parent.text("token=tok-123456") == "token=tok-123456"
    assert child.data({"a": ["tok-123456", 3]}) == {"a": [MASK, 3]}


def test_a_secret_containing_another_is_masked_whole() -> None:
    redactor = Redactor(["secret", "secret-and-more"])
    assert redactor.text("x secret-and-more y") == f"x {MASK} y"
    child = redactor.child()
    child.add("longer-secret-and-more-still")
    assert child.text("longer-secret-and-more-still") == MASK


def test_the_logging_filter_masks_messages_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(Redactor(["s3cr3t-value"])))
    logger = logging.getLogger("test.secret")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad s3cr3t-value")
        except ValueError:
            logger.error("saw %s", "s3cr3t-value", exc_info=True, extra={"fields": {"url": "http://x/?k=s3cr3t-value"}})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert "s3cr3t-value" not in line
    entry = json.loads(line)
    assert entry["msg"] == f"saw {MASK}" and entry["url"] == f"http://x/?k={MASK}" and MASK in entry["exc"]
