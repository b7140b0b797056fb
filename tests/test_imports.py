"""The package's import graph: no cycles, the layering entry points -> eval -> data -> models and train -> data ->
models, and no transformers behind the data modules (they run in converter and loader processes that never build a
model)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def vla_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the vla package (a package is named by its __init__.py)."""
    modules = {}
    for path in sorted((REPO / "vla").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the vla modules it imports anywhere in its body (function-level imports included: they run too).
    `from a import b` points to a.b when that is a module, else to the package a."""
    modules = vla_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# package -> the vla packages it must not import
FORBIDDEN = {
    "vla.models": ("vla.data", "vla.train", "vla.eval", "vla.rl"),
    "vla.data": ("vla.train", "vla.eval", "vla.rl"),
    "vla.eval": ("vla.train", "vla.rl"),
    "vla.train": ("vla.rl",),  # train.py dispatches to vla.rl; the SFT code never imports it
    "vla.serve": ("vla.rl",),
}


def test_layering():
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items())
        for package, forbidden in FORBIDDEN.items()
        if module == package or module.startswith(package + ".")
        for target in sorted(targets)
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert not wrong, "; ".join(wrong)


def first_importer_of(modules: list[str], forbidden: str) -> dict:
    """Import `modules` one by one in a fresh interpreter; the first after which `forbidden` (or a submodule of it)
    is loaded, or None."""
    code = f"""
import json, sys
for name in {modules!r}:
    __import__(name)
    if any(m == {forbidden!r} or m.startswith({forbidden!r} + ".") for m in sys.modules):
        print(json.dumps(name))
        break
else:
    print(json.dumps(None))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def package_modules(package: str) -> list[str]:
    return [m for m in vla_modules() if m.startswith(package + ".")]


@pytest.mark.parametrize("package,forbidden", [("vla.data", "transformers"), ("vla.eval", "vla.train")])
def test_importing_a_package_does_not_pull_in(package, forbidden):
    modules = package_modules(package)
    assert len(modules) > 3
    culprit = first_importer_of(modules, forbidden)
    assert culprit is None, f"importing {culprit} imports {forbidden}"


def test_import_check_sees_transformers():
    # the check above cannot pass for want of looking: the model does import transformers
    assert first_importer_of(["vla.data.config", "vla.models.pi0"], "transformers") == "vla.models.pi0"
