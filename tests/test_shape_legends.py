"""One batch-axis letter in docs and legends: shapes write the batch axis as ``b`` everywhere (trainer,
processor, model, encoders); a tensor batched by clip is ``(b, s)`` with its legend saying rows are clips.
This test scans every docstring, comment and string of ``mowe/`` and the README for a shape tuple led by
another batch letter (the ``(c, s)`` the processor and model once used), so the two spellings cannot drift
apart again."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A shape tuple led by ``c`` (``(c, s)``, ``(c,)``) or a legend entry naming ``c`` as clips. (``B`` in
# mowe.evaluation.stats is the number of bootstrap draws, not a batch of inputs.)
OTHER_BATCH_LETTER = re.compile(r"\(c,(?:\s*[\w\s+*/-]*)?\)|``c`` clips")


def _text_of(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each comment and string literal (docstrings included) of a Python file."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)):
            out.append((tok.start[0], tok.string))
    return out


def offenders(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        chunks = _text_of(path) if path.suffix == ".py" else list(enumerate(path.read_text().splitlines(), 1))
        for line, text in chunks:
            for m in OTHER_BATCH_LETTER.finditer(text):
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{name}:{line}: {m.group()}")
    return found


def test_docs_and_legends_use_b_for_the_batch_axis():
    files = sorted((ROOT / "mowe").rglob("*.py")) + [ROOT / "README.md"]
    assert len(files) > 50
    assert offenders(files) == []


def test_the_scan_finds_a_planted_other_letter(tmp_path: Path):
    planted = tmp_path / "m.py"
    planted.write_text(
        '"""Shape legend: ``c`` clips."""\n\n\n'
        'def f(x):\n    """``x`` ``(c, s)`` waveforms."""\n'
        "    return x.sum(-1)  # (c,)\n\n\n"
        "Y = '(c, n)'\nZ = (c, 1)  # code, not a doc: not scanned\n"
    )
    found = [f.split(": ", 1)[1] for f in offenders([planted])]
    assert found == ["``c`` clips", "(c, s)", "(c,)", "(c, n)"]
    # channels or conv widths inside a shape are not the batch axis
    ok = tmp_path / "ok.py"
    ok.write_text('"""``x`` ``(b, c, t)`` conv features, ``(n, c)`` channels."""\n')
    assert offenders([ok]) == []
