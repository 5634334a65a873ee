"""Shared pieces of the bad-input zoo (tests/test_bad_input_zoo*.py): files, run files, a per-case alarm."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mowe.cli import main

ROOT = Path(__file__).resolve().parent.parent
RUN_TINY = ROOT / "examples" / "run_tiny.yaml"
ENV = dict(
    os.environ,
    OMP_NUM_THREADS="1",
    MOWE_FIFO_TIMEOUT="1",
    PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
)
CASE_TIMEOUT = 60  # seconds per case; the FIFO waits are 0.3 s here


@pytest.fixture(autouse=True)
def per_case_timeout(monkeypatch):
    """Fail (not hang) a case that blocks: SIGALRM interrupts even a blocking open() of a FIFO (PEP 475)."""
    monkeypatch.setenv("MOWE_FIFO_TIMEOUT", "0.3")

    def boom(signum, frame):
        raise TimeoutError(f"bad-input case ran past {CASE_TIMEOUT} s (a hang)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(CASE_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------------ helpers
def _wav(path: Path | bytes, seconds: float = 0.3, sr: int = 16000) -> None:
    n = int(seconds * sr)
    frames = b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 440 * i / sr))) for i in range(n))
    with wave.open(open(path, "wb"), "wb") as w:  # open(): bytes paths too
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(frames)


def _fifo(tmp: Path, name: str) -> Path:
    p = tmp / name
    os.mkfifo(p)
    return p


def _run_dict() -> dict:
    return yaml.safe_load(RUN_TINY.read_text())


def _run_file(tmp: Path, edit: Callable[[dict], None] | None = None, name: str = "run.yaml") -> Path:
    run = _run_dict()
    run["data"]["train"] = str(tmp / "train.jsonl")
    run["train"]["output_dir"] = str(tmp / "out")
    if edit is not None:
        edit(run)
    p = tmp / name
    p.write_text(yaml.safe_dump(run))
    return p


def _manifest(tmp: Path, names=("a.wav", "b.wav"), prefix: bytes = b"") -> Path:
    lines = []
    for i, n in enumerate(names):
        _wav(os.fsencode(tmp / n))
        lines.append(
            json.dumps(
                {"id": f"x{i}", "audio": n, "instruction": "What is it?", "answer": "a tone", "task": "asr"}
            )
        )
    p = tmp / "train.jsonl"
    p.write_bytes(prefix + ("\n".join(lines) + "\n").encode())
    return p


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "\x1b[" not in err, err
    assert err.startswith(f"mowe {argv[0]}: error:") or code == 0, err
    return code, err


def _bomb(levels: int = 8, key: str = "p") -> str:
    """A billion-laughs YAML mapping: 9 ** levels leaves from a few hundred bytes."""
    lines = [f"{key}0: &{key}0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def _raise(exc: BaseException) -> Callable[[], None]:
    def f():
        raise exc

    return f


_FLOW_BOMB = "{" + ", ".join(ln.replace(": ", ": ", 1) for ln in _bomb().splitlines()) + "}"
_LLAMA = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
