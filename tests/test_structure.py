"""The house's rules that a change can break without any behaviour test noticing: no import
cycle in the tree (lazy imports inside functions count), the trainer knows nothing of the
launcher, the product never imports the benchmarks, and no product file grows past ~350 lines."""
import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("launcher", "recsys_core", "jobs", "benchmarks")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            # a module's own parent packages are imported with it: not an edge of the design
            graph[m] |= {n for n in names if n in mods and n != m and not m.startswith(n + ".")}
    return graph


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}      # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " → ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_layers():
    graph = import_graph()
    for m, deps in graph.items():
        if not m.startswith("benchmarks"):
            assert not [d for d in deps if d.startswith("benchmarks")], m
        if m.startswith("recsys_core"):
            assert not [d for d in deps if d.startswith(("launcher", "jobs"))], m


def test_product_files_stay_readable():
    long = {str(p.relative_to(REPO)): n for m, p in modules().items()
            if not m.startswith("benchmarks") and (n := len(p.read_text().splitlines())) > 380}
    assert not long, f"files over ~350 lines: {long}"


def test_the_launcher_plans_and_reports_without_importing_torch(tmp_path):
    """torch's import is most of a CLI call's start-up (about 1 s of 1.3 s here): the launcher
    validates configurations and reads results without it; only the jobs train."""
    import subprocess
    import sys
    probe = ("import runpy, sys\n"
             "sys.argv = ['launcher'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_module('launcher', run_name='__main__')\n"
             "finally:\n"
             "    print('torch' in sys.modules)\n")
    for args in (["sweep", "quickstart", "--executor", "dry-run", "--out", str(tmp_path / "s")],
                 ["status", str(tmp_path / "s")]):
        out = subprocess.run([sys.executable, "-c", probe, *args], cwd=REPO, capture_output=True,
                             text=True)
        assert out.stdout.strip().splitlines()[-1] == "False", (args, out.stdout, out.stderr)
