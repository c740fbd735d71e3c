"""The house rules, checked: the toy world stays in its corner, modules stay small, imports flow one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tafs"
TOY_ALLOWED = {"tafs/toyworld", "tafs/tasks/toy.py", "tafs/tasks/toy_commands.py", "tafs/rewards/toy.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every tafs module ``path`` imports, at module level or inside functions (the package uses absolute
    imports only: a relative one fails the test)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import of {node.module!r}"
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "tafs" or m.startswith("tafs.")}


def test_only_the_toy_world_mentions_the_toy_world():
    hits = subprocess.run(["grep", "-rl", "tafs.toyworld", "tafs/", "--include=*.py"], cwd=ROOT,
                          capture_output=True, text=True).stdout.split()
    assert hits, "the toy task and rewards do import the toy world"
    outside = [h for h in hits if not any(h == a or h.startswith(a + "/") for a in TOY_ALLOWED)]
    assert not outside, f"generic modules that name the toy world: {outside}"


def test_no_module_over_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, big


def test_no_import_cycle_inside_tafs():
    mods = _modules()
    graph = {name: {m for m in _imports(path, name) if m in mods and m != name} for name, path in mods.items()}
    # a package's __init__ is not an edge target unless imported as such
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert len(graph) > 40  # the walk saw the package


def test_cycle_detector_sees_function_level_imports(tmp_path):
    """The parser counts imports inside functions too (lazy imports are still dependencies)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tafs.report.figures import figure4\n")
    assert "tafs.report.figures" in _imports(f, "tafs.x")


@pytest.mark.parametrize("cmd, needles", [
    ("rewards", ["toy_dense", "toy_correct", "clip ", "needs metadata ['objects']"]),
    ("tasks", ["toy_preference", "toy_composition", "trains on"]),
])
def test_listing_commands(cmd, needles):
    res = subprocess.run([sys.executable, "-m", "tafs", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert all(len(line.split()) > 3 for line in lines)  # a name and a description each
    for needle in needles:
        assert needle in res.stdout, res.stdout


def test_tasks_lists_user_tasks_from_a_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    (tmp_path / "p.txt").write_text("a cat\n")
    cfg.write_text(f"tasks:\n  mine:\n    description: my cats\n    prompts: {{train: {tmp_path}/p.txt, test: "
                   f"{tmp_path}/p.txt}}\n    rewards: {{clip: 1.0}}\n")
    res = subprocess.run([sys.executable, "-m", "tafs", "tasks", "--configfile", str(cfg)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "mine" in res.stdout and "my cats" in res.stdout, res.stderr


GENERIC = ["tafs/paths.py", "tafs/sources.py", "tafs/dag.py", "tafs/grid.py", "tafs/cli.py", "tafs/tracking",
           "workflow/rules", "Snakefile"]
TOY_NAMES = ("toy", "scorer")  # the toy world's models and tasks: declared by the toy task (TaskSpec.builds)


def _code_names(path: Path) -> list[str]:
    """Identifiers and string constants of a Python file (docstrings and comments left out), or the non-comment
    text of each line of a Snakemake file."""
    text = path.read_text()
    if path.suffix != ".py":
        return [line.split("#", 1)[0] for line in text.splitlines()]
    tree = ast.parse(text)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.append(node.id)
        elif isinstance(node, ast.Attribute):
            out.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.arg)):
            out.append(getattr(node, "name", None) or node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            out.append(node.value)
    return out


def test_the_generic_layer_names_no_toy_model():
    """The toy base and scorer are models the toy task declares (TaskSpec.builds, built by the generic rule
    build_model): no identifier, string or rule of the generic layer names them."""
    files = [p for g in GENERIC for p in ([ROOT / g] if (ROOT / g).is_file() else sorted((ROOT / g).rglob("*.*")))
             if p.suffix in (".py", ".smk", "") and p.is_file()]
    assert len(files) > 10
    hits = {str(p.relative_to(ROOT)): sorted({n for n in _code_names(p) if any(t in n.lower() for t in TOY_NAMES)})
            for p in files}
    assert not {k: v for k, v in hits.items() if v}, hits


def test_the_toy_name_check_sees_code_not_docs(tmp_path):
    code = tmp_path / "m.py"
    code.write_text('"""the toy scorer"""\n# toy\ndef f():\n    """toy"""\n    return "models/clip_scorer"\n')
    assert [n for n in _code_names(code) if "scorer" in n] == ["models/clip_scorer"]
