"""The package's layers (``.importlinter``): ``lint-imports`` keeps the contract, every module of ``mowe``
sits in a layer, an upward import planted in a copy of the package breaks it, and function-level ``from mowe``
   imports are
the few listed here, each with its reason."""

from __future__ import annotations

import ast
import configparser
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONTRACT = ROOT / ".importlinter"
LINT = pathlib.Path(sys.executable).with_name("lint-imports")

needs_linter = pytest.mark.skipif(
    not LINT.exists(), reason="import-linter is not installed (pip install -e .[test])"
)


def _layers() -> list[list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(CONTRACT)
    lines = [ln.strip() for ln in cfg["importlinter:contract:layers"]["layers"].splitlines()]
    return [
        [m.strip() for m in ln.replace(":", "|").split("|")] for ln in lines if ln and not ln.startswith("#")
    ]


def _lint(cwd: pathlib.Path) -> subprocess.CompletedProcess:
    # PYTHONPATH: the package under test is the one in `cwd` (a temp copy in the planted test)
    return subprocess.run(
        [str(LINT)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
    )


def test_every_module_of_mowe_is_in_a_layer():
    listed = {m for layer in _layers() for m in layer}
    top = {p.stem for p in (ROOT / "mowe").glob("*.py") if p.stem != "__init__"}
    top |= {p.parent.name for p in (ROOT / "mowe").glob("*/__init__.py")}
    assert {f"mowe.{m}" for m in top} == listed


@needs_linter
def test_lint_imports_keeps_the_layers():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "KEPT" in res.stdout and "BROKEN" not in res.stdout


@needs_linter
@pytest.mark.parametrize(
    "where, planted",
    [
        # a part reaching up into the model, and a foundation reaching into the CLI, inside a function
        ("mowe/connectors/basic.py", "from mowe.model import MoWEAudioLLM\n"),
        ("mowe/config.py", "def _planted():\n    from mowe.cli import main\n    return main\n"),
    ],
)
def test_a_planted_upward_import_breaks_the_contract(tmp_path, where, planted):
    shutil.copytree(ROOT / "mowe", tmp_path / "mowe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONTRACT, tmp_path / ".importlinter")
    assert _lint(tmp_path).returncode == 0  # the copy itself keeps the contract
    target = tmp_path / where
    target.write_text(target.read_text() + "\n\n" + planted)
    res = _lint(tmp_path)
    assert res.returncode != 0 and "BROKEN" in res.stdout
    importer = where.removesuffix(".py").replace("/", ".")
    assert f"{importer} ->" in res.stdout  # the report names the planted import


# Function-level `from mowe` imports left in mowe/, each with its reason. Everything else imports at the top
# of
# its module: the layers have no cycle to dodge.
FUNCTION_LEVEL: dict[tuple[str, str], str] = {}


def _function_level_imports() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "mowe").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (
                        node.level or (node.module or "").startswith("mowe")
                    ):
                        found.append((str(path.relative_to(ROOT)), node.module or "."))
                    elif isinstance(node, ast.Import) and any(a.name.startswith("mowe") for a in node.names):
                        found.append((str(path.relative_to(ROOT)), node.names[0].name))
    return found


def test_function_level_mowe_imports_are_the_listed_few():
    found = _function_level_imports()
    assert len(found) < 15
    assert set(found) == set(FUNCTION_LEVEL), (
        "a new function-level import: move it to the top of its module "
        "(a cycle means a helper belongs in a lower layer), or list it here with its reason"
    )
