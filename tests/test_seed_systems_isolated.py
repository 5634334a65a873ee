"""The seed systems live in one place: outside docstrings and comments, only ``mowe/salmonn/``,
``mowe/ltu_as/`` and the preset registry ``mowe/presets.py`` name SALMONN or LTU-AS (case-insensitive
``salmonn`` or ``ltu``) in ``mowe/``: identifiers, string literals and import paths anywhere else are named as
``file:line``."""

from __future__ import annotations

import ast
import io
import re
import shutil
import textwrap
import tokenize
from pathlib import Path

MOWE = Path(__file__).resolve().parents[1] / "mowe"
SEED_NAME = re.compile(r"salmonn|ltu", re.IGNORECASE)
ALLOWED = (
    "salmonn/",
    "ltu_as/",
    "presets.py",
)  # relative to mowe/: the seed packages and the preset registry


def docstring_lines(source: str) -> set[int]:
    """Lines of every docstring: a string that is the first statement of the module, a class or a function."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def seed_names(root: Path) -> list[str]:
    """``file:line: token`` for every token under ``root`` (a copy of ``mowe/``) that names a seed system,
    outside comments, docstrings and the allowed places."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED):
            continue
        source = path.read_text(encoding="utf-8")
        docs = docstring_lines(source)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start[0] in docs):
                continue
            if SEED_NAME.search(tok.string):
                found.append(f"mowe/{rel}:{tok.start[0]}: {tok.string[:80]}")
    return found


def test_only_the_seed_packages_and_the_registry_name_the_seed_systems():
    assert seed_names(MOWE) == []


def test_the_scan_names_each_planted_occurrence_and_skips_docstrings_and_comments(tmp_path):
    root = tmp_path / "mowe"
    shutil.copytree(MOWE, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert seed_names(root) == []
    (root / "planted.py").write_text(
        textwrap.dedent('''\
        """A module docstring may say SALMONN."""
        from mowe.ltu_as import ltu_as  # an import path (this comment may say LTU-AS)


        def build():
            """A docstring may say LTU-AS."""
            x = "salmonn"  # a string literal
            return x


        class Salmonn:  # an identifier
            pass
        ''')
    )
    with open(root / "builders.py", "a", encoding="utf-8") as f:  # a planted line in a real module
        f.write("\nKIND = 'whisper_ltu'\n")
    n_builders = len((root / "builders.py").read_text().splitlines())
    assert seed_names(root) == [
        f"mowe/builders.py:{n_builders}: 'whisper_ltu'",
        "mowe/planted.py:2: ltu_as",
        "mowe/planted.py:2: ltu_as",
        'mowe/planted.py:7: "salmonn"',
        "mowe/planted.py:11: Salmonn",
    ]


def test_the_allowed_places_are_where_the_seed_systems_are():
    for rel in ALLOWED:
        assert (MOWE / rel).exists(), rel
    # they do name the systems: the allowance is used, not a hole for files that do not exist
    assert all(
        any(
            SEED_NAME.search(line) for line in p.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        for p in (MOWE / "salmonn" / "preset.py", MOWE / "ltu_as" / "preset.py", MOWE / "presets.py")
    )
