"""restorer_core's layout: no import circle, every module importable on its own, never ComfyUI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "restorer_core"
COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list:
    """Every module `name` imports (at the top or inside functions), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found += ([base] if node.module else []) + [f"{base}.{a.name}" for a in node.names]
    return found


def _graph() -> dict:
    return {name: sorted({m for m in _imports(name, path) if m in MODULES and m != name})
            for name, path in MODULES.items()}


def _cycles(graph: dict) -> list:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


def test_no_import_cycle_in_restorer_core():
    """Not even through an import inside a function: each stage only looks down, never back."""
    graph = _graph()
    assert "restorer_core.faces.tracks" in graph["restorer_core.faces.temporal"]  # the graph sees imports
    assert "restorer_core.faces.temporal" in graph["restorer_core.faces.locate"]  # lazy ones too
    assert _cycles(graph) == []


def test_restorer_core_names_no_comfyui_module():
    offenders = [(name, m) for name, path in MODULES.items() for m in _imports(name, path)
                 if m.split(".")[0] in COMFY_MODULES]
    assert offenders == []


# Imports every module alone: restorer_core's modules are dropped from sys.modules before each,
# so a module that only works when another was imported first fails here. Third-party modules
# stay loaded (torch is imported once), which keeps this to a few seconds.
_IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for key in [k for k in sys.modules if k == "restorer_core" or k.startswith("restorer_core.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=3)
comfy = sorted(k for k in sys.modules if k.split(".")[0] in json.loads(sys.argv[2]))
print(json.dumps({"failed": failed, "comfy": comfy}))
"""


def test_every_module_imports_on_its_own_without_comfyui():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(sorted(MODULES)), json.dumps(COMFY_MODULES)],
                          cwd=CORE.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["comfy"] == []
    assert len(MODULES) > 60  # the walk saw the whole package


def test_shipped_assets_are_found_from_the_modules_that_load_them():
    """Each default path is computed from its module's own place in the package."""
    from restorer_core.face_id import DEFAULT_FACE_ID_PATH
    from restorer_core.faces.detect.yunet import SHIPPED_MODEL
    from restorer_core.faces.identity import DEFAULT_EMBEDDER_PATH
    from restorer_core.model_zoo import DEFAULT_MODEL_PATH

    for path in (DEFAULT_FACE_ID_PATH, SHIPPED_MODEL, DEFAULT_EMBEDDER_PATH, DEFAULT_MODEL_PATH):
        assert path.is_file(), path
        assert path.is_relative_to(CORE / "assets")


def test_every_restorer_core_path_the_docs_name_exists():
    """The README's walk and the docs point at files and folders that are there."""
    import re

    repo = CORE.parent
    named = set()
    for doc in [repo / "README.md", *sorted((repo / "docs").glob("*.md")), CORE / "assets" / "models" / "MODEL_CARD.md"]:
        named |= {m.rstrip(".") for m in re.findall(r"restorer_core/[\w./]*[\w/]", doc.read_text(encoding="utf-8"))}
    assert "restorer_core/faces/locate.py" in named and "restorer_core/cli/restore.py" in named
    missing = sorted(p for p in named if not (repo / p).exists())
    assert missing == []
