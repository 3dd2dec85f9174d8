"""Run a helper module of tests/helpers under Triton's interpreter (TRITON_INTERPRET=1 must be
set before a kernel is built, so in a process of its own); its JSON result. `main` is such a
helper's command line: `kernel CASES OUT` or `model OUT`."""
import importlib.util
import json
import os
import subprocess
import sys


def interpreted(helper: str, *args: str, tmp_path):
    import pytest

    from tests.conftest import REPO
    if importlib.util.find_spec("triton") is None:
        pytest.fail("triton is not installed: `pip install -e '.[dev]'` (or `pip install "
                    "triton`); these tests run its interpreter on the CPU")
    out = tmp_path / "result.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", f"tests.helpers.{helper}", *args, str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def main(kernel, model) -> None:
    """`kernel CASES OUT`: kernel(the JSON list CASES); `model OUT`: model(); JSON to OUT."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 (Triton's interpreter, for CPU tensors)")
    what, *rest = sys.argv[1:]
    result = kernel(json.loads(rest[0])) if what == "kernel" else model()
    with open(rest[-1], "w") as f:
        json.dump(result, f)
