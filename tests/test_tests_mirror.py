"""``tests/`` mirrors ``mowe/``: every subpackage has its test folder, and every module is tested in the
mirrored place.

The rule, for a module ``mowe/<p>/<m>.py`` (``<p>`` empty for a top-level module; ``__init__.py`` and
``__main__.py`` excepted) and its mirror folder ``tests/<p>/``:

1. every subpackage ``mowe/<p>/`` has a folder ``tests/<p>/`` holding at least one ``test_*.py``;
2. the module is covered by a file of ``tests/<p>/`` (a ``test_*.py``, or a ``_*helpers.py`` the tests there
   share) that either is named for it (``test_<m>.py``, ``test_<m>_*.py`` or ``test_*_<m>.py``) or imports it:
   ``import mowe.<p>.<m>``, ``from mowe.<p>.<m> import ...``, ``from mowe.<p> import <m>``, or
   ``from mowe.<p> import Name`` where ``Name`` is defined in ``mowe.<p>.<m>``;
3. otherwise the module is in :data:`COVERED_ELSEWHERE` with where it is tested and why there, and every entry
   there is a module that exists and really fails rule 2 (no stale entries).
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mowe"
TESTS = ROOT / "tests"

# Modules tested, but not from their mirror folder by import or name; keep this short. Each entry says where
# they are tested and why not so. ``pkg.*`` stands for every module of ``pkg`` that fails rule 2.
COVERED_ELSEWHERE = {
    # `mowe convert`'s sub-commands: each seed system's Converter, tested through the registry listing them.
    "mowe.checkpoints.converter": "tests/test_cli_convert.py, through mowe.presets.CONVERTERS",
    "mowe.ltu_as.convert": "tests/test_cli_convert.py, tests/ltu_as/test_ltu_as_checkpoint.py",
    "mowe.salmonn.convert": "tests/test_cli_convert.py, tests/salmonn/test_salmonn_checkpoint.py",
    # The windowed Whisper (LTU-AS's encoder, generic in name) is pinned against LTU-AS's checkpoint format.
    "mowe.encoders.whisper_window": "tests/ltu_as/test_ltu_as_checkpoint.py, tests/ltu_as/test_transcribe.py",
    # Plain constants read by every layer; a test of their own would only repeat their values.
    "mowe.constants": "every test that builds a batch (MODEL_INPUT_KEYS, SAMPLE_RATE, IGNORE_INDEX)",
    # The processor's helpers, reached only through MoWEProcessor's own methods.
    "mowe.data.inputs": "tests/data/test_processor*.py, through MoWEProcessor.__call__ (rates, BatchFeature)",
    # BEATs' transformer blocks: only meaningful inside the model, whose features are pinned against the
    # official code's.
    "mowe.encoders.beats.layers": "tests/encoders/beats/test_beats.py, through BEATsEncoder",
    # The CTranslate2 reader is one of the formats WhisperEncoder.from_pretrained recognises.
    "mowe.encoders.ctranslate2": "tests/encoders/test_whisper_pretrained.py, a real CTranslate2 folder",
    # mowe.hf implements MoWEAudioLLM's transformers-style methods (save/load, push_to_hub, LoRA merge and
    # export, the Auto classes); the tests call those methods, as users do.
    "mowe.hf.*": "tests/hf/test_hf_native.py, via MoWEAudioLLM.save_pretrained, from_pretrained, AutoModel",
    # The server runs as a real `mowe serve` subprocess, spoken to over HTTP (and with the openai client).
    "mowe.serve.*": "tests/serve/test_serve_*.py, `mowe serve` subprocesses on 127.0.0.1",
    # The trainer's skip budget and resume checks, exercised by training runs that hit them.
    "mowe.training.guards": "tests/training/test_trainer.py (non-finite loss: skip budget, stop)",
    "mowe.training.resume": "tests/training/test_trainer.py (resume refused with another batch or grouping)",
}


def _listed(name: str, entry: str) -> bool:
    return name == entry or (entry.endswith(".*") and name.startswith(entry[:-1]))


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        out[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return out


def subpackages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)


def mirror_folder(module_path: Path) -> Path:
    return TESTS / module_path.parent.relative_to(PACKAGE)


def _defined_in(module: str, name: str) -> str | None:
    """The mowe module that defines ``module.name``: a submodule, a function's or class's module, or the
    module whose ``__all__`` exports that very object."""
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if hasattr(obj, "__qualname__"):  # a function or class knows its module
        return obj.__module__
    for other in modules():  # a constant: the module that exports it in its __all__
        mod = sys.modules.get(other)
        exported = mod is not None and name in getattr(mod, "__all__", ())
        if other != module and exported and getattr(mod, name) is obj:
            return other
    return module


def imported_modules(test_file: Path) -> set[str]:
    """Every ``mowe`` module a file imports or uses (at any depth, so function-level imports count):
    ``import mowe.a.b``, ``from mowe.a.b import X``, ``from mowe.a import b``, ``from mowe.a import X`` (``X``
    defined in ``mowe.a.b``), and ``alias.X`` for a module imported as ``alias`` (``from mowe.demo import
    corpus as C``, then ``C.SOUND_EVENTS`` uses the module that defines it)."""
    found: set[str] = set()
    aliases: dict[str, str] = {}
    tree = ast.parse(test_file.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "mowe":
                    found.add(a.name)
                    aliases[a.asname or a.name] = a.name
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "mowe"
        ):
            found.add(node.module)
            for a in node.names:
                where = _defined_in(node.module, a.name)
                if where:
                    found.add(where)
                    if where == f"{node.module}.{a.name}":  # a module, imported by name
                        aliases[a.asname or a.name] = where
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            where = _defined_in(aliases[node.value.id], node.attr)
            if where:
                found.add(where)
    return found


def _named_for(test_file: Path, stem: str) -> bool:
    name = test_file.stem
    return (
        name == f"test_{stem}"
        or name.startswith(f"test_{stem}_")
        or (name.startswith("test_") and name.endswith(f"_{stem}"))
    )


def uncovered() -> list[str]:
    missing = []
    for name, path in modules().items():
        folder = mirror_folder(path)
        files = sorted(folder.glob("test_*.py")) + sorted(folder.glob("_*helpers.py"))
        if any(_named_for(f, path.stem) for f in files):
            continue
        if any(name in imported_modules(f) for f in files):
            continue
        missing.append(name)
    return missing


def test_every_subpackage_has_its_test_folder():
    assert len(subpackages()) >= 8
    missing = [
        str(p.relative_to(ROOT))
        for p in subpackages()
        if not any((TESTS / p.relative_to(PACKAGE)).glob("test_*.py"))
    ]
    assert missing == [], f"no tests/<same path>/test_*.py for {missing}"


def test_every_module_is_tested_in_its_mirrored_place():
    assert len(modules()) > 60
    missing = uncovered()
    unlisted = [m for m in missing if not any(_listed(m, e) for e in COVERED_ELSEWHERE)]
    assert unlisted == [], "add tests/<same path>/test_<module>.py (see the rule in this file's docstring)"
    stale = [e for e in COVERED_ELSEWHERE if not any(_listed(m, e) for m in missing)]
    assert stale == [], f"now covered in the mirror (or gone): drop from COVERED_ELSEWHERE: {stale}"


def test_the_rule_sees_a_module_without_a_test(tmp_path, monkeypatch):
    """A planted module with no test is reported; a test named for it, or importing it, covers it."""
    pkg = tmp_path / "mowe" / "newpart"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "thing.py").write_text("X = 1\n")
    (tmp_path / "tests").mkdir()
    rule = sys.modules[__name__]
    monkeypatch.setattr(rule, "ROOT", tmp_path)
    monkeypatch.setattr(rule, "PACKAGE", tmp_path / "mowe")
    monkeypatch.setattr(rule, "TESTS", tmp_path / "tests")
    assert rule.uncovered() == ["mowe.newpart.thing"]
    (tmp_path / "tests" / "newpart").mkdir()
    (tmp_path / "tests" / "newpart" / "test_other.py").write_text("import mowe.newpart.thing\n")
    assert rule.uncovered() == []
    (tmp_path / "tests" / "newpart" / "test_other.py").write_text("X = 1\n")
    assert rule.uncovered() == ["mowe.newpart.thing"]
    (tmp_path / "tests" / "newpart" / "test_thing_edges.py").write_text("X = 1\n")
    assert rule.uncovered() == []
