"""Whether the detectors run compiled: the modules setup.py builds with Cython, or their .py files as they are.

The modules of this package with a ``.pxd`` beside them are compiled by
setup.py from their unchanged ``.py``. The compiled ones are used only when
every one of them is built from the sources now on disk: `_compiled.json`,
written by the build, holds each one's hash of its .py and .pxd, and a
module edited since (a developer's change, a `git checkout`) would otherwise
be shadowed by an extension built from older code. Then, or with
``FLOWPROBE_PURE_PYTHON=1``, every one of them is imported from its .py: all
or none, since a compiled module reaches into the extension types of the
others. Both give the same scores to the bit and pickle alike
(tests/analytics/test_compiled.py).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["BUILT", "MODULES", "select", "source_hash"]

log = logging.getLogger("flowprobe.analytics.scorers")

HERE = Path(__file__).parent
PACKAGE = __name__.rpartition(".")[0]
BUILT = HERE / "_compiled.json"  # setup.py's record: module -> the hash of the sources it was built from


def source_hash(module: Path) -> str:
    """The hash of a compiled module's sources, its .py and .pxd (setup.py records the same)."""
    digest = hashlib.sha256()
    for path in (module.with_suffix(".py"), module.with_suffix(".pxd")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _extension(name: str) -> bool:
    return any((HERE / f"{name}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _choose(modules: tuple[str, ...]) -> tuple[bool, str]:
    """(whether the compiled modules are used, why, in words)."""
    if os.environ.get("FLOWPROBE_PURE_PYTHON"):
        return False, "FLOWPROBE_PURE_PYTHON is set"
    if not all(_extension(name) for name in modules):
        return False, "not built (no C compiler, or installed with FLOWPROBE_PURE_PYTHON=1)"
    try:
        built = json.loads(BUILT.read_text())
    except (OSError, ValueError):
        built = {}
    stale = [name for name in modules if built.get(name) != source_hash(HERE / name)]
    if stale:
        return False, f"stale: {', '.join(stale)} changed since the build (`make install` rebuilds them)"
    return True, "built from these sources"


class _Source(importlib.abc.MetaPathFinder):
    """Imports the compiled modules from their .py: Python's own finder would take the extension beside it."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = modules

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, HERE / f"{name}.py")


MODULES = tuple(sorted(path.stem for path in HERE.glob("*.pxd")))  # those setup.py compiles


def select() -> tuple[bool, str]:
    """Choose, before any of `MODULES` is imported: (whether they run compiled, why, in words). The package calls it."""
    compiled, why = _choose(MODULES)
    if not compiled:
        if why.startswith("stale"):
            log.warning("the detectors run as pure Python, about half as fast: the compiled ones are %s", why)
        sys.meta_path.insert(0, _Source(MODULES))
    return compiled, why
