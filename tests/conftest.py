"""Fixtures shared by several test modules (opt in with `pytestmark = pytest.mark.usefixtures(...)`)."""

from __future__ import annotations

import pytest

from tests.helpers import probe_environment

# The shipped environments.yaml names these URLs; in-process tests answer them with ASGI or mock transports.
OFFLINE_URLS = {"prod": "http://prod.test", "staging": "http://staging.test", "dev": "http://dev.test"}


@pytest.fixture
def offline_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped workflows' secrets, and their environments at hosts that are never dialled."""
    for name, value in probe_environment(OFFLINE_URLS).items():
        monkeypatch.setenv(name, value)
