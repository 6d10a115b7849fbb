"""The import graph of ``services/`` and ``ui/`` (issue 13's acceptance).

Every import counts: module level, under ``TYPE_CHECKING`` and inside functions. Checked:
- no import cycles (strongly connected components of more than one module);
- no service imports another service (``services.core`` is shared; the CLI is a service too), and no
  service imports the desktop app;
- nothing imports ``ui.app`` (the run loop and wiring) except ``ui.__main__``;
- ``ui.view`` (the Dear PyGui panes) imports neither ``ui.app`` nor the wiring (``ui.workspace``, the
  object the panes are built from, included: they know it only by its ports);
- every ``ui`` module outside ``ui/view/`` and ``ui/app.py`` imports with Dear PyGui absent.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in ("services", "ui") for p in (ROOT / top).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # every import, anywhere
            if isinstance(node, ast.Import):
                deps.update(r for a in node.names if (r := resolve(a.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    r = resolve(full) if full in mods else resolve(base)
                    if r:
                        deps.add(r)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def service_of(mod: str) -> str | None:
    parts = mod.split(".")
    if parts[0] != "services" or len(parts) < 2 or parts[1] == "core":
        return None
    return parts[1]


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The graph counts imports under TYPE_CHECKING and inside functions (the checker could fail)."""
    g = import_graph()
    assert "services.core.contracts.chat" in g["services.core.contracts.events"]
    # ui.view.base imports the state model at module level; ui.app imports ui.view in a function
    assert "ui.state.model" in g["ui.view.base"]
    assert "ui.view" in g["ui.app"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_in_services_and_ui() -> None:
    assert cycles(import_graph()) == []


def test_no_service_imports_another_service_or_the_desktop() -> None:
    bad = []
    for mod, deps in import_graph().items():
        for dep in deps:
            a, b = service_of(mod), service_of(dep)
            if a and b and a != b:
                bad.append((mod, dep))
            if mod.startswith("services.") and dep.split(".")[0] == "ui":
                bad.append((mod, dep))
    assert bad == []


def test_nothing_imports_the_app_and_the_panes_import_no_wiring() -> None:
    g = import_graph()
    importers = sorted(m for m, deps in g.items() if "ui.app" in deps)
    assert importers == ["ui.__main__"]
    for mod, deps in g.items():
        if mod.startswith("ui.view"):
            assert not deps & {"ui.app", "ui.workspace", "ui.adapter", "ui.controller"}, mod
            # nor through another module (the ports, the state): the panes never reach the wiring
            seen: set[str] = set()
            todo = [d for d in deps if d in g]
            while todo:
                d = todo.pop()
                if d not in seen:
                    seen.add(d)
                    todo.extend(x for x in g[d] if x in g)
            assert not seen & {"ui.app", "ui.workspace", "ui.adapter", "ui.controller", "ui.account"}, (
                mod,
                sorted(seen),
            )


def test_ui_outside_the_panes_imports_without_dear_pygui() -> None:
    """Each module in a fresh interpreter where importing ``dearpygui`` fails."""
    names = sorted(
        m
        for m in modules()
        if m.startswith("ui") and not m.startswith("ui.view") and m not in ("ui.app", "ui.__main__")
    )
    assert "ui.state.model" in names and "ui.ports" in names
    script = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dearpygui' or name.startswith('dearpygui.'):\n"
        "            raise ImportError('dearpygui is absent in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "assert not any(m.startswith('dearpygui') for m in sys.modules), 'dearpygui was imported'\n"
        "print('ok', len(sys.argv))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


def test_the_dear_pygui_blocker_works() -> None:
    """The same blocker makes a pane fail to import (so the test above could fail)."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dearpygui' or name.startswith('dearpygui.'):\n"
        "            raise ImportError('absent')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import ui.view.timeline\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "absent" in done.stderr
