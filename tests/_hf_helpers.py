"""One small corpus written three ways: WAV files + a JSONL manifest, and the same rows as a Hugging Face
dataset with an ``Audio`` column (``save_to_disk``), parquet and audiofolder. Clips alternate 44.1 kHz and 16
kHz."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

NAMES = ("low", "mid", "high")


def write_corpus(root: str | os.PathLike, n: int = 12) -> dict[str, Path]:
    """Write ``n`` WAVs (tone height -> answer; 44.1 kHz for even rows, 16 kHz for odd), ``train.jsonl`` and
    the rows as ``rows.json`` (what the dataset builders take). Returns the paths."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c = i % 3
        sr = 44_100 if i % 2 == 0 else 16_000
        t = np.arange(int((0.3 + 0.04 * i) * sr)) / sr
        wave = (0.4 * np.sin(2 * np.pi * (300 + 500 * c) * t)).astype(np.float32)
        sf.write(root / "audio" / f"{i}.wav", wave, sr, subtype="PCM_16")
        rows.append(
            {
                "id": f"ex{i}",
                "audio": f"audio/{i}.wav",
                "instruction": "Which tone is it?",
                "answer": NAMES[c],
                "task": "sound_event" if i % 2 else "asr",
            }
        )
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "manifest": root / "train.jsonl", "rows": rows}


def build_hf_dataset(corpus: dict, *, rename: dict[str, str] | None = None):
    """The manifest's rows as a ``datasets.Dataset`` with an ``Audio`` column (file bytes embedded)."""
    import datasets

    root = corpus["root"]
    cols: dict[str, list] = {
        k: [r[k] for r in corpus["rows"]] for k in ("id", "instruction", "answer", "task")
    }
    cols["audio"] = [
        {"bytes": (root / r["audio"]).read_bytes(), "path": os.path.basename(r["audio"])}
        for r in corpus["rows"]
    ]
    ds = datasets.Dataset.from_dict(cols).cast_column("audio", datasets.Audio())
    for old, new in (rename or {}).items():
        ds = ds.rename_column(old, new)
    return ds


def save_hf_dataset(corpus: dict, path: str | os.PathLike, **kw) -> Path:
    build_hf_dataset(corpus, **kw).save_to_disk(str(path))
    return Path(path)


def cache_as_hub_dataset(ds, repo_id: str, cache_dir: str | os.PathLike) -> None:
    """Put ``ds`` into the ``datasets`` cache ``cache_dir`` the way ``load_dataset(repo_id)`` online leaves it
    (``<namespace>___<name>/default/0.0.0/<hash>/<name>-train.arrow``), so an offline load finds it there."""
    import shutil

    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    src = Path(cache_dir) / "_src.parquet"
    ds.to_parquet(str(src))
    builder = Parquet(
        cache_dir=str(cache_dir),
        dataset_name=name,
        hash="0" * 16,
        data_files=DataFilesDict.from_patterns({"train": [str(src)]}),
    )
    builder.download_and_prepare()
    target = Path(cache_dir) / f"{namespace}___{name}" / "default"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(builder.cache_dir).parent.parent), str(target))
