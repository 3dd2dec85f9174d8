"""Run a helper module of tests/helpers under Triton's interpreter (TRITON_INTERPRET=1 must be
set before a kernel is built, so in a process of its own); its JSON result."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def interpreted(helper: str, *args: str, tmp_path):
    if importlib.util.find_spec("triton") is None:
        pytest.fail("triton is not installed: `pip install -e '.[dev]'` (or `pip install "
                    "triton`); these tests run its interpreter on the CPU")
    out = tmp_path / "result.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", f"tests.helpers.{helper}", *args, str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())
