"""The shape of the code: modules of one job, imports that never go round in a circle, an API
that needs nothing of the daemon. Read from the source (every import counts, also one made
inside a function to put it off), so a circle is found before anything imports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "api", "models")
# A module longer than this holds more than one job (the issue that split them set it).
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project's modules that `path` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    return {target for target in targets if target in modules and target != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules round it, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(name: str) -> list[str] | None:
        path.append(name)
        on_path.add(name)
        for target in sorted(graph[name]):
            if target in on_path:
                return path[path.index(target) :] + [target]
            if target not in done:
                found = visit(target)
                if found:
                    return found
        path.pop()
        on_path.discard(name)
        done.add(name)
        return None

    for name in sorted(graph):
        if name not in done:
            found = visit(name)
            if found:
                return found
    return None


def test_no_import_circle() -> None:
    assert _circle(_graph()) is None


# `import ... from "./grid.js"`, `export ... from "./api.js"`, `import("./detail.js")`.
_SCRIPT_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*["']\./([\w-]+\.js)["']""")


def _script_graph() -> dict[str, set[str]]:
    scripts = {path.name: path for path in (ROOT / "api" / "static").glob("*.js")}
    return {name: set(_SCRIPT_IMPORT.findall(path.read_text())) & set(scripts) for name, path in scripts.items()}


def test_no_import_circle_among_the_gallery_scripts() -> None:
    assert _circle(_script_graph()) is None


def test_the_script_import_reader_reads_every_form() -> None:
    text = 'import { a } from "./api.js";\nimport * as grid from \'./grid.js\';\nexport { b } from "./dom.js";\nawait import("./detail.js");'
    assert set(_SCRIPT_IMPORT.findall(text)) == {"api.js", "grid.js", "dom.js", "detail.js"}


def test_the_circle_finder_finds_one() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_api_imports_nothing_of_the_daemon() -> None:
    graph = _graph()
    assert {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("api") or name.startswith("models")
        for target in targets
        if target.startswith("daemon")
    } == set()


def test_no_module_over_the_size_of_one_job() -> None:
    sources = [*_modules().values(), *(ROOT / "api" / "static").glob("*.js")]
    assert {
        path.relative_to(ROOT).as_posix(): lines
        for path in sources
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    } == {}
