"""`pipelines` is the library; the CLI is a thin layer over it, never the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pipelines_import_neither_argparse_nor_the_cli():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_modules(path) & {"argparse", "cli"})
        for path in sorted((ROOT / "pipelines").glob("*.py"))
    }

    assert {name: found for name, found in offenders.items() if found} == {}


def test_every_command_family_registers_its_commands():
    import cli

    for name in cli.FAMILIES:
        module = __import__(name, fromlist=["register_cli"])
        assert callable(getattr(module, "register_cli", None)), name
    commands = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"submit", "jobs", "demo", "search", "transcribe", "import-prices", "extract-strategy", "trends"} <= set(
        commands
    )


def _middleware_modules() -> dict[str, Path]:
    """The modules of ``middleware/`` that define a middleware (the others are the leaves they share)."""
    found = {}
    for path in sorted((ROOT / "middleware").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        bases = {
            base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            for base in node.bases
        }
        if "Middleware" in bases:
            found[f"middleware.{path.stem}"] = path
    return found


def test_no_middleware_imports_another_or_the_application_only_the_leaves_they_share():
    modules = _middleware_modules()
    assert {"middleware.cancel", "middleware.job_status", "middleware.retries"} <= set(modules)
    offenders = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        # Nor the application: the broker and the actors are built from the middleware, not under it.
        application = {module for module in imported if module.split(".")[0] in ("broker", "actors", "pipelines")}
        if others := sorted(((imported & set(modules)) - {name}) | application):
            offenders[name] = others

    assert offenders == {}
