"""Property fuzz of ManifestDataset: any manifest bytes give a dataset or a ManifestError, never another
exception.

Manifests are random bytes, or lines built from valid examples whose fields are dropped, retyped or replaced
by arbitrary JSON, whose audio paths point at good, broken, missing or odd files, and whose bytes are then
cut, flipped or spliced. Both ``on_bad_example`` modes are checked; a dataset that is built must be consistent
and its first example must read (or, in "skip" mode, be None and reported). Audio problems raise
ManifestAudioError, which is a ManifestError too.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mowe.data.manifest import ManifestDataset
from mowe.errors import ManifestError

MAX_EXAMPLES = int(os.environ.get("MOWE_FUZZ_EXAMPLES", "60"))
FIELDS = ("audio", "instruction", "answer", "task", "id", "meta")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz_manifest")
    (d / "sub").mkdir()
    x = np.sin(np.arange(1600) / 5.0).astype(np.float32) * 0.3
    sf.write(str(d / "a.wav"), x, 16_000, subtype="PCM_16")
    sf.write(str(d / "sub" / "b.wav"), x[:800], 8_000, subtype="FLOAT")
    (d / "garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(40)))
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio\n")
    return d


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
audio_values = st.sampled_from(
    [
        "a.wav",
        "sub/b.wav",
        "garbage.wav",
        "empty.wav",
        "text.wav",
        "missing.wav",
        "sub",
        "",
        "../a.wav",
        "a\u0000.wav",
        "x" * 300,
        "/dev/null",
        "ABS",
    ]
) | st.text(max_size=20)


@st.composite
def example_line(draw: st.DrawFn, root: Path) -> bytes:
    obj: dict = {
        "audio": draw(audio_values),
        "instruction": draw(st.text(max_size=20)),
        "answer": draw(st.text(max_size=20)),
        "task": draw(st.sampled_from(["asr", "gender", ""])),
    }
    if obj["audio"] == "ABS":
        obj["audio"] = str(root / "a.wav")
    if draw(st.booleans()):
        obj["id"] = draw(st.sampled_from(["x", "y", 1, 2]) | json_values)
    if draw(st.booleans()):  # half the lines are valid, so datasets (and skip mode) are reached too
        obj["audio"] = draw(st.sampled_from(["a.wav", "sub/b.wav", str(root / "a.wav")]))
        obj["task"] = "asr"
        obj.pop("id", None)
        return json.dumps(obj).encode()
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):  # drop or retype fields
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(json_values)
    value = obj if draw(st.integers(0, 9)) else draw(json_values)  # sometimes not an object at all
    data = bytearray(json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 2))):  # byte-level damage
        op = draw(st.sampled_from(["cut", "flip", "splice"]))
        if op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "splice":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=4))
    return bytes(data)


@st.composite
def manifest_bytes(draw: st.DrawFn, root: Path) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=300))
    lines = draw(st.lists(example_line(root), min_size=0, max_size=6))
    return draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"", b"\n"]))


def test_fuzz_manifest_gives_dataset_or_manifest_error(root: Path):
    manifest = root / "fuzz.jsonl"
    seen = {"dataset": 0, "error": 0}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=manifest_bytes(root))
    def check(data: bytes) -> None:
        manifest.write_bytes(data)
        for mode in ("error", "skip"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ds = ManifestDataset(manifest, on_bad_example=mode)
                except ManifestError as e:
                    assert str(manifest) in str(e)
                    seen["error"] += 1
                    continue
                seen["dataset"] += 1
                assert len(ds) >= 1 and len(ds.lengths) == len(ds.tasks) == len(ds.ids) == len(ds)
                assert len(set(ds.ids)) == len(ds)
                if mode == "error":
                    assert ds.skipped == []
                before = len(ds.skipped)
                try:
                    ex = ds[0]
                except ManifestError as e:
                    assert mode == "error" and str(manifest) in str(e)
                    continue
                if ex is None:
                    assert mode == "skip" and len(ds.skipped) == before + 1
                else:
                    assert ex["audio"].ndim == 1 and ex["audio"].shape[0] > 0
                assert (ds.skip_report() != "") == bool(ds.skipped)

    check()
    assert seen["error"] > 0 and seen["dataset"] > 0  # the generator reaches both outcomes
