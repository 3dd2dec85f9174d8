#!/usr/bin/env bash
# The wheels a GPU machine without these packages needs (the device image has torch, triton,
# accelerate, numpy, pandas, pyarrow, matplotlib, scipy, PyYAML, but not what is below), at the
# versions this environment holds, for CPython 3.12 on manylinux x86-64:
#   .whl       what every study call imports (jobs/study_call.sh installs it itself)
#   .whl-tune  optuna and its needs, for `launcher tune` (issue 18's tune-ml1m phase)
# Run here, from the repository root, in the project's venv; then carry .whl (and .whl-tune)
# in the device call, whose command starts with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -eu
PY=${PYTHON:-python}
STUDY="xlstm mlstm_kernels submitit cloudpickle mambapy einops tabulate pydantic pydantic_core annotated_types typing_inspection typing_extensions"
TUNE="optuna alembic sqlalchemy colorlog mako markupsafe"
fetch() {   # fetch DIR NAME...: each NAME at this environment's version
  dir=$1; shift
  mkdir -p "$dir"
  for name in "$@"; do
    version=$($PY -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$version" ] || { echo "device_wheels: $name is not installed here (pip install -e '.[dev]' first)" >&2; exit 2; }
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$dir" "$name==$version" 2>&1 | grep -v '^WARNING' || true
  done
}
fetch .whl $STUDY
fetch .whl-tune $TUNE
du -sh .whl .whl-tune
