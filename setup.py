"""The anomaly detectors' per-point code, compiled with Cython where it can be; everything else is in pyproject.toml.

The modules of ``analytics/scorers`` that have a ``.pxd`` beside them are
compiled from their unchanged ``.py`` (Cython's pure-Python mode: the
``.pxd`` declares the classes as extension types and their hot attributes and
locals as C types). The ``.py`` files stay the source of truth and run as
they are wherever the compiled modules are missing, stale or turned off
(``FLOWPROBE_PURE_PYTHON=1``); ``analytics/scorers/__init__.py`` decides at
import. A machine without a C compiler, or a build with
``FLOWPROBE_PURE_PYTHON=1``, installs the pure-Python package: the extensions
are optional. ANALYTICS.md, "Compiled scorers", gives the figures.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SCORERS = Path("analytics/scorers")
# The package's choice at import, loaded on its own (without the package, which needs its dependencies): the source hash
# and the record of what was built, which it checks so that a stale extension is never loaded.
_spec = importlib.util.spec_from_file_location("flowprobe_scorers_compiled", SCORERS / "compiled.py")
choice = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(choice)


class BuildScorers(build_ext):
    """Builds the extensions, all or none, and records each one's source hash beside them.

    Each is optional, so a failed compile does not fail the install; but the package runs them all compiled or none
    (analytics/scorers/compiled.py), so if one fails every one is removed, older builds of them too (in place from
    before, or in the build directory), with the record: the package is then pure Python.
    """

    def run(self) -> None:
        self.built: dict[str, str] = {}
        super().run()
        if not self.extensions:
            return
        outputs = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        record = outputs[0].parent / choice.BUILT.name
        if len(self.built) == len(self.extensions):
            record.write_text(json.dumps(self.built, indent=1, sort_keys=True) + "\n")
            return
        for path in [*outputs, record]:
            path.unlink(missing_ok=True)
        self.warn(f"the compiled detectors were not built ({len(self.built)} of {len(outputs)}): they install as pure Python")

    def build_extension(self, ext: Extension) -> None:
        super().build_extension(ext)  # setuptools leaves an optional one out if this raises
        name = ext.name.rsplit(".", 1)[1]
        self.built[name] = choice.source_hash(SCORERS / name)


def extensions() -> list[Extension]:
    if os.environ.get("FLOWPROBE_PURE_PYTHON"):
        return []
    from Cython.Build import cythonize  # a build requirement (pyproject.toml)

    built = cythonize(
        # -g0: no debug information, a seventh of the size (1 MB for all of them, not 6.5)
        [Extension(f"analytics.scorers.{name}", [str(SCORERS / f"{name}.py")], extra_compile_args=["-g0"]) for name in choice.MODULES],
        compiler_directives={
            "language_level": 3,
            "annotation_typing": False,  # the types are the .pxd's: `float | None` hints must stay Python objects
            "auto_pickle": False,  # pickled as the pure-Python classes are (their __getstate__), so state files move freely
        },
        quiet=True,
    )
    for ext in built:
        ext.optional = True  # a machine without a C compiler installs the pure-Python ones (cythonize drops the flag)
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildScorers})
