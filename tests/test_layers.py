"""The floor plan: imports only run downward through the declared layers, no module imports itself back through
others, few modules lie loose at the top, none is long, and the module map (docs/development.md) names what the tree
holds.

Every import counts, also one inside a function or under `TYPE_CHECKING`: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "b24_mcp"

# Lowest first: a part may import itself and the parts before it, never one after it. A part is a folder of
# b24_mcp/ or a module loose at its top; `b24_mcp` itself (`__version__`) is below every part.
LAYERS = [
    "errors",  # the error kinds
    "telemetry",  # the log, metrics, the call in hand
    "text",  # CRM text made safe to show
    "secure",  # key derivation, sealing, token digests
    "addresses",  # URLs and host names in the settings
    "credentials",  # webhook, OAuth grant
    "env_file",  # the env file named on purpose
    "settings",  # B24_* configuration
    "sandbox",  # the emulated portal
    "portal",  # the portal client
    "journal",  # the audit journal
    "postgres",  # the state replicas share
    "deleting",  # the gate, one item, the application a deletion runs in
    "bulk",  # a set of items
    "signin",  # people sign in
    "serving",  # MCP tools, HTTP transport
    "app",  # the composition root
    "commands",  # the command line
    "__main__",
]
MAX_LOOSE = 10
MAX_LINES = 450


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules `name` imports, anywhere in its text."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [origin, *(f"{origin}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("b24_mcp"):
                yield target


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports_of(name, path, known)) for name, path in found.items()}


def part(module: str) -> str | None:
    """The layer part a module belongs to (None for `b24_mcp` itself)."""
    return module.split(".")[1] if module != "b24_mcp" else None


def test_every_part_of_the_package_has_a_declared_layer() -> None:
    parts = {part(module) for module in modules()} - {None}
    assert parts == set(LAYERS)


def test_imports_only_run_downward_through_the_layers() -> None:
    rank = {name: position for position, name in enumerate(LAYERS)}
    upward = []
    for module, targets in sorted(graph().items()):
        for target in sorted(targets):
            source_part, target_part = part(module), part(target)
            if target_part is None or source_part is None or source_part == target_part:
                continue
            if rank[target_part] > rank[source_part]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_module_imports_itself_back_through_others() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []


def test_at_most_ten_modules_lie_loose_at_the_top() -> None:
    loose = [path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    assert len(loose) <= MAX_LOOSE, sorted(loose)


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_module_map_names_every_part() -> None:
    tree = (ROOT / "docs" / "development.md").read_text().split("```", 2)[1]
    named = {line.split()[0] for line in tree.splitlines() if line.startswith("  ") and not line.startswith("   ")}
    wanted = {f"{name}/" if (PACKAGE / name).is_dir() else f"{name}.py" for name in LAYERS}
    assert wanted - named == set()
