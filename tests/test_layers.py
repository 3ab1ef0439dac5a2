"""The import contract's second half: no import inside a function in ``src/klaviyo_bridge`` but
the few that defer a heavy or optional dependency (``ALLOWED``, each with its reason).

The first half, which package may import which, is pyproject's ``[tool.importlinter]``, checked
by ``lint-imports`` in .ci/run and pre-commit. An import placed in a function to get round an
import cycle hides the cycle from nobody but the reader: the fix is to move the code to the
layer it belongs to (docs/architecture.md, "The packages").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: (importing module, imported module) -> why the import waits until the function runs.
ALLOWED: dict[tuple[str, str], str] = {
    ("klaviyo_bridge.aio", "uvloop"): "optional: not installed on Windows",
    ("klaviyo_bridge.api.budget", "redis"): "optional backend: only a redis:// rate budget loads it",
    ("klaviyo_bridge.api.budget", "klaviyo_bridge.store.rate_budget"): "optional backend: the PostgreSQL driver "
    "(ADBC, which loads pyarrow.dataset and parquet: ~11 MB of RSS, ~0.1 s) for a postgresql:// budget only",
    ("klaviyo_bridge.store.factory", "klaviyo_bridge.store.postgres"): "optional backend: as above, for a "
    "postgresql:// warehouse only",
    ("klaviyo_bridge.cli.console_cmd", "klaviyo_bridge.console"): "heavy: the web stack (starlette, jinja2, uvicorn, "
    "~0.25 s) loads for the console verb only",
    ("klaviyo_bridge.cli.console_cmd", "klaviyo_bridge.console.server"): "heavy: as above",
    ("klaviyo_bridge.cli.demo_cmd", "klaviyo_emulator.server"): "heavy: the emulator (~0.5 s) loads for demo only",
    ("klaviyo_bridge.cli.demo_cmd", "klaviyo_emulator.settings"): "heavy: as above",
    ("klaviyo_bridge.jobs", "klaviyo_bridge.jobs.kinds"): "heavy: the import, export and workflow engines (~0.25 s, "
    "~15 MB) load when a job first runs, not for the verbs that list or kill jobs",
    ("klaviyo_bridge.memory", "pyarrow"): "heavy: the CLI fixes malloc before every verb, but Arrow (~0.3 s, ~45 MB) "
    "loads with the verbs that use it, and its pool is chosen then (cli/__init__.py VERBS)",
}


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The modules an import statement names (``from X import name``: X)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        return [node.module or ""]
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return [".".join(base + ([node.module] if node.module else []))]


def function_imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) of every import statement inside a function body of ``source``."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((name, child.lineno) for name in _imported(module, child, is_package))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def violations(src: Path = SRC) -> list[str]:
    out = []
    for path in sorted((src / "klaviyo_bridge").rglob("*.py")):
        module = _module_name(path, src)
        for imported, line in function_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if (module, imported) not in ALLOWED:
                out.append(f"{path.relative_to(src)}:{line}: {module} imports {imported} inside a function")
    return out


def test_no_function_level_imports_but_the_allowed_ones() -> None:
    found = violations()
    assert not found, (
        "an import inside a function: move it to the top of the module (if it dodges an import "
        "cycle, move the code to the layer it belongs to), or add it to ALLOWED with the heavy or "
        "optional dependency it defers:\n" + "\n".join(found)
    )


def test_every_allowed_import_is_still_there() -> None:
    present = set()
    for path in sorted((SRC / "klaviyo_bridge").rglob("*.py")):
        module = _module_name(path)
        present.update(
            (module, name) for name, _ in function_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
        )
    stale = sorted(set(ALLOWED) - present)
    assert not stale, f"ALLOWED lists imports that are gone (remove them from the list): {stale}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f():\n    from ..jobs import KINDS\n", ["klaviyo_bridge.jobs"]),
        ("class C:\n    async def m(self):\n        import json\n", ["json"]),
        ("def f():\n    def g():\n        from . import locks\n", ["klaviyo_bridge.store"]),
        ("import json\nfrom ..jobs import KINDS\nif True:\n    import os\n", []),  # module level
    ],
)
def test_the_check_sees_imports_in_functions(source: str, expected: list[str]) -> None:
    assert [name for name, _ in function_imports(source, "klaviyo_bridge.store.locks")] == expected


def test_the_check_reports_a_forbidden_import(tmp_path: Path) -> None:
    package = tmp_path / "klaviyo_bridge" / "store"
    package.mkdir(parents=True)
    (package / "locks.py").write_text("def f():\n    from ..jobs import KINDS\n    return KINDS\n")
    assert violations(tmp_path) == [
        "klaviyo_bridge/store/locks.py:2: klaviyo_bridge.store.locks imports klaviyo_bridge.jobs inside a function"
    ]
