"""The compiled detectors (setup.py, Cython) against their .py files: the same scores to the bit, one state file format,
and the .py files whenever the build is missing, stale or turned off."""

from __future__ import annotations

import importlib.machinery
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

import analytics.scorers
from analytics.scorers import COMPILED, COMPILED_WHY, DETECTORS
from analytics.scorers.compiled import MODULES
from analytics.scorers.ensemble import EnsembleScorer
from bench.anomaly_domain import make_set
from tests.analytics.test_nab import shipped_scores

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(analytics.scorers.__file__).parent
FILE = "realKnownCause/machine_temperature_system_failure.csv"  # 22,695 rows: every member speaks, the habits too
COMPILER = shlex.split(sysconfig.get_config_var("CC") or "cc")[0]

needs_compiled = pytest.mark.skipif(not COMPILED, reason=f"the compiled detectors are not in use ({COMPILED_WHY}): nothing to compare")

# In a child process: the same work on the .py files (FLOWPROBE_PURE_PYTHON), given a pickle to resume and the points.
PURE = """
import pickle, sys
import numpy as np
import analytics.scorers
assert not analytics.scorers.COMPILED
detector, points = pickle.loads(open(sys.argv[1], "rb").read())
scores = []
for x, t in points:
    scores.append(detector.score_one(x, t))
    detector.learn_one(x, t)
np.save(sys.argv[2], np.asarray(scores))
open(sys.argv[3], "wb").write(pickle.dumps(detector))
"""


def pure(tmp_path: Path, detector: object, points: list[tuple[float, float]]) -> tuple[np.ndarray, object]:
    """(the scores, the detector after them) of `detector`, resumed from its pickle by the pure-Python modules."""
    given, scores, saved = tmp_path / "given.pickle", tmp_path / "scores.npy", tmp_path / "saved.pickle"
    given.write_bytes(pickle.dumps((detector, points)))
    env = dict(os.environ, FLOWPROBE_PURE_PYTHON="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", PURE, str(given), str(scores), str(saved)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(scores), pickle.loads(saved.read_bytes())


def scored(detector: object, points: list[tuple[float, float]]) -> np.ndarray:
    out = []
    for x, t in points:
        out.append(detector.score_one(x, t))
        detector.learn_one(x, t)
    return np.asarray(out)


@pytest.mark.skipif(shutil.which(COMPILER) is None, reason=f"no C compiler ({COMPILER}): the detectors install as pure Python")
@pytest.mark.skipif("FLOWPROBE_PURE_PYTHON" in os.environ, reason="FLOWPROBE_PURE_PYTHON is set")
def test_a_machine_with_a_c_compiler_runs_the_compiled_detectors() -> None:
    """`make install` builds them (setup.py); a build that silently fell back to pure Python, at half the speed, fails."""
    assert COMPILED, COMPILED_WHY
    assert set(MODULES) >= {"window", "calibration", "robust", "ensemble"}
    for name in MODULES:
        module = sys.modules[f"analytics.scorers.{name}"]
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__


@needs_compiled
def test_compiled_and_pure_score_a_nab_file_and_the_domain_set_alike_to_the_bit(tmp_path: Path) -> None:
    """All of NAB and the domain set (seed 7, 24 series, every 300, 60 and 15 s) were compared so; here one NAB file and
    four series at each of two rates, which take every path of the ensemble: the habits, the cadence's blocks, the
    seasonal buckets."""
    series, compiled = shipped_scores(FILE)
    cases = [(list(zip(series.values, series.times)), compiled)]
    for interval in (60.0, 15.0):
        for s in make_set(7, 4, interval)[0]:
            points = list(zip(s.values, s.times))
            cases.append((points, scored(DETECTORS["ensemble"](), points)))
    for points, compiled in cases:
        scores, _ = pure(tmp_path, DETECTORS["ensemble"](), points)
        assert np.array_equal(scores, compiled), int(np.flatnonzero(scores != compiled)[0])


@needs_compiled
def test_a_state_saved_by_either_resumes_in_the_other_exactly(tmp_path: Path) -> None:
    series, _ = shipped_scores(FILE)
    points = list(zip(series.values, series.times))[:9000]
    whole = scored(DETECTORS["ensemble"](), points)
    detector = DETECTORS["ensemble"]()
    first = scored(detector, points[:3000])
    second, detector = pure(tmp_path, detector, points[3000:6000])  # compiled -> pure, and its state back
    assert type(detector) is EnsembleScorer, "loaded here: the compiled class"
    third = scored(detector, points[6000:])
    assert np.array_equal(np.concatenate([first, second, third]), whole)


def package_copy(tmp_path: Path) -> Path:
    """The analytics package with its build (.so, _compiled.json), to edit: an import of it in a child sees the copy."""
    shutil.copytree(PACKAGE.parent, tmp_path / "analytics", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    return tmp_path / "analytics" / "scorers"


def imported(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A child that imports the detectors from `root`: prints whether compiled, the ensemble's file, why, and the worker's words."""
    code = ("import analytics.scorers as s, analytics.scorers.ensemble as e;"
            "print(s.COMPILED, e.__file__, s.COMPILED_WHY, s.how_they_run(), sep='\\n')")
    environ = {k: v for k, v in os.environ.items() if k != "FLOWPROBE_PURE_PYTHON"} | {"PYTHONPATH": str(root)} | env
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=environ, capture_output=True, text=True, timeout=120)


@needs_compiled
def test_an_edited_module_sends_every_detector_module_back_to_its_py_file_with_a_warning(tmp_path: Path) -> None:
    """A .py changed since the build (a developer's edit, a checkout) would be shadowed by its older extension."""
    scorers = package_copy(tmp_path)
    ok = imported(tmp_path)
    assert ok.returncode == 0 and ok.stdout.splitlines()[:2] == ["True", str(next(scorers.glob("ensemble.*.so")))], ok.stderr
    assert ok.stdout.splitlines()[3] == "compiled (built from these sources)", "what the worker logs and the demo prints"
    assert "pure Python" not in ok.stderr
    with (scorers / "robust.py").open("a") as file:
        file.write("\n# edited\n")
    stale = imported(tmp_path)
    assert stale.returncode == 0, stale.stderr
    compiled, where, why, said = stale.stdout.splitlines()
    assert (compiled, where) == ("False", str(scorers / "ensemble.py")), "all or none: the ensemble is not robust.py"
    assert why.startswith("stale: robust ") and "make install" in why and said == f"pure Python ({why})"
    assert "the detectors run as pure Python" in stale.stderr and "robust" in stale.stderr


def test_without_a_build_or_with_flowprobe_pure_python_the_py_files_run_quietly(tmp_path: Path) -> None:
    scorers = package_copy(tmp_path)
    off = imported(tmp_path, FLOWPROBE_PURE_PYTHON="1")
    assert off.returncode == 0 and off.stdout.splitlines() == [
        "False", str(scorers / "ensemble.py"), "FLOWPROBE_PURE_PYTHON is set", "pure Python (FLOWPROBE_PURE_PYTHON is set)"], off
    for built in [*scorers.glob("*.so"), scorers / "_compiled.json"]:
        built.unlink(missing_ok=True)
    bare = imported(tmp_path)
    assert bare.returncode == 0 and bare.stdout.splitlines()[:2] == ["False", str(scorers / "ensemble.py")], bare
    assert bare.stdout.splitlines()[2].startswith("not built") and bare.stderr == ""


def sources(tmp_path: Path) -> Path:
    """A copy of what the package builds from (Cython's .c files too, where made: they are not made again)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source)
    for package in ("collector", "analytics"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.so", "_compiled.json"))
    return source


def wheel(source: Path, into: Path, **env: str) -> zipfile.ZipFile:
    """The package's wheel, as pip builds it with setup.py (in `source`'s own build directory, as the Docker builder)."""
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(into), str(source)]
    result = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = into.glob("flowprobe-*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.skipif(shutil.which(COMPILER) is None, reason=f"no C compiler ({COMPILER}): the wheel would hold no compiled detectors")
def test_a_wheel_holds_the_compiled_detectors_and_without_a_working_compiler_the_py_files_alone(tmp_path: Path) -> None:
    """What the Docker image's builder stage makes (`pip wheel`), installed elsewhere: the record goes with it. Then the
    same tree, a module edited, built with a compiler that fails: each extension is optional, so the wheel builds,
    and holds none of them, nor their older builds (still in the tree's build directory), nor the record."""
    source = sources(tmp_path)
    with wheel(source, tmp_path / "compiled") as built:
        names = built.namelist()
        assert {n.split("/")[-1].split(".")[0] for n in names if n.endswith(".so")} == set(MODULES)
        assert "analytics/scorers/_compiled.json" in names and not any(n.endswith(".c") for n in names)
        built.extractall(tmp_path / "compiled" / "site")
    ran = imported(tmp_path / "compiled" / "site")
    assert ran.returncode == 0 and ran.stdout.splitlines()[0] == "True", ran

    with (source / "analytics" / "scorers" / "robust.py").open("a") as file:
        file.write("\n# edited\n")
    with wheel(source, tmp_path / "pure", CC="false") as built:
        assert [n for n in built.namelist() if n.endswith(".so") or n.endswith("_compiled.json")] == []
        built.extractall(tmp_path / "pure" / "site")
    ran = imported(tmp_path / "pure" / "site")
    assert ran.returncode == 0 and ran.stdout.splitlines()[0] == "False", ran
    assert ran.stdout.splitlines()[2].startswith("not built") and "pure Python" not in ran.stderr
