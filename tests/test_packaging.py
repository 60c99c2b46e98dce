"""The package's own build: pyproject.toml's metadata as the build backend it names reads it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUILD_METADATA = "import sys; from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"


def test_the_metadata_builds_with_every_warning_an_error(tmp_path: Path) -> None:
    """setuptools warns that a `project.license` table stops building after 2027-02-18: `make install` would then fail
    on a fresh machine. Any such deprecation fails this test first."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", BUILD_METADATA, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = (tmp_path / result.stdout.split()[-1] / "METADATA").read_text(encoding="utf-8")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert f"Name: {project['name']}" in metadata and f"Version: {project['version']}" in metadata
    assert f"License-Expression: {project['license']}" in metadata, "the licence as an SPDX expression"
