#!/bin/sh
# Issue 5 §5 in one run, on a machine with an NVIDIA GPU and CuPy (and cuDF where it is installed):
# the GPU tests of the frame backend, then pandas against CuPy and cuDF at 1M, 10M and 50M points.
#
#   sh bench/gpu_check.sh                  # from the repository root
#   PYTHON=.venv/bin/python sh bench/gpu_check.sh
#
# It imports only analytics/frame.py and analytics/batch.py: the Python needs numpy, pandas and pytest
# besides CuPy, not the rest of flowprobe's dependencies. Without a GPU the GPU tests skip and the
# cupy and cudf rows say why.
set -eu
PY=${PYTHON:-python3}
"$PY" - <<'PYTHON'
import importlib, sys
found = []
for name in ("numpy", "pandas", "pytest", "cupy", "cudf"):
    try:
        found.append(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:
        found.append(f"{name} missing ({type(exc).__name__})")
print("python", sys.version.split()[0], "|", ", ".join(found))
PYTHON
# Without pytest-timeout there, pyproject's `timeout` is an unknown option, and its filterwarnings = error made that an
# internal error of pytest (seen with numpy, pandas and pytest alone): the warning is let through instead.
"$PY" -m pytest -q -rs --noconftest -p no:cacheprovider -W ignore::pytest.PytestConfigWarning -m gpu tests/analytics/test_frame.py
"$PY" -m bench.analytics_throughput --points 1M,10M --repeat 3 --backends pandas,cupy,cudf
"$PY" -m bench.analytics_throughput --points 50M --repeat 1 --backends pandas,cupy,cudf
