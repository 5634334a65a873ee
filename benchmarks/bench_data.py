"""Reading training data from a Hugging Face dataset against the same clips in a JSONL manifest, and a
streaming resume's fast-forward.

Data: ``n`` clips of 1-6 s (tones + noise), every other one at 44.1 kHz (the rest 16 kHz), 16-bit WAV files
with a manifest; the same rows as a ``save_to_disk`` dataset with an ``Audio`` column (the files' bytes
embedded).

Measured, interleaved in one process (``_common.timed_rounds``; ratios are medians of per-round ratios):

* ``hf_index_ratio``: building the index (checking every row, reading every clip's duration from its header)
  of the dataset / of the manifest (headers from the bytes in the Arrow file vs from the files);
* ``hf_read_ratio``: decoding every example (mono, resampled to 16 kHz) from the dataset / from the manifest;
* ``stream_skip_ratio``: a streaming resume reaching micro-batch ``m`` (half an epoch, read but not decoded) /
  decoding those ``m`` micro-batches (what a resume that replayed them would cost);
* ``hf_equals_manifest``: 1 when every decoded clip and field is identical between the two.

``--quick``: 24 clips (the smoke test).
"""

from __future__ import annotations

import json
import os
import tempfile

import _common as C
import numpy as np
import soundfile as sf
import torch

from mowe.data.manifest import ManifestDataset
from mowe.data.open_data import open_dataset
from mowe.data.stream_sampler import StreamSampler


def write_data(root: str, n: int) -> tuple[str, str]:
    import datasets

    os.makedirs(os.path.join(root, "audio"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        sr = 44_100 if i % 2 == 0 else 16_000
        secs = 1.0 + 5.0 * rng.random()
        t = np.arange(int(secs * sr)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * (i % 20)) * t) + 0.05 * rng.standard_normal(t.shape[0])
        sf.write(os.path.join(root, "audio", f"{i}.wav"), wave.astype(np.float32), sr, subtype="PCM_16")
        rows.append(
            {
                "id": f"c{i}",
                "audio": f"audio/{i}.wav",
                "instruction": "What is it?",
                "answer": "a tone",
                "task": "sound",
            }
        )
    manifest = os.path.join(root, "train.jsonl")
    with open(manifest, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    cols = {k: [r[k] for r in rows] for k in ("id", "instruction", "answer", "task")}
    cols["audio"] = [
        {"bytes": open(os.path.join(root, r["audio"]), "rb").read(), "path": r["audio"]} for r in rows
    ]
    hf = os.path.join(root, "hf")
    datasets.Dataset.from_dict(cols).cast_column("audio", datasets.Audio()).save_to_disk(hf)
    return manifest, hf


def main() -> None:
    args = C.parse_quick().parse_args()
    C.set_threads(args.threads)
    n = 24 if args.quick else 200
    with tempfile.TemporaryDirectory(prefix="mowe-bench-data-") as root:
        manifest, hf = write_data(root, n)
        man, ds = ManifestDataset(manifest, max_audio_seconds=None), open_dataset(hf, max_audio_seconds=None)
        same = (
            all(
                torch.equal(man[i]["audio"], ds[i]["audio"]) and man[i]["answer"] == ds[i]["answer"]
                for i in range(n)
            )
            and man.lengths == ds.lengths
        )
        index = C.timed_rounds(
            {
                "manifest": lambda: ManifestDataset(manifest, max_audio_seconds=None),
                "hf": lambda: open_dataset(hf, max_audio_seconds=None),
            },
            repeats=3 if args.quick else 5,
        )
        read = C.timed_rounds(
            {"manifest": lambda: [man[i] for i in range(n)], "hf": lambda: [ds[i] for i in range(n)]},
            repeats=2 if args.quick else 3,
        )
        stream = open_dataset(hf, streaming=True, max_audio_seconds=None)
        m = n // 8  # batch 4: half an epoch

        def resume():
            next(
                StreamSampler(
                    stream, seed=0, stage_index=0, batch_size=4, group_by_length=True, group_mult=4
                ).micro_batches(m)
            )

        def replay():
            it = StreamSampler(
                stream, seed=0, stage_index=0, batch_size=4, group_by_length=True, group_mult=4
            ).micro_batches(0)
            for _ in range(m + 1):
                next(it)

        skip = C.timed_rounds({"resume": resume, "replay": replay}, repeats=2 if args.quick else 3)
    res = {
        "hf_index_ratio": C.paired_ratio(index["hf"], index["manifest"]),
        "hf_read_ratio": C.paired_ratio(read["hf"], read["manifest"]),
        "stream_skip_ratio": C.paired_ratio(skip["resume"], skip["replay"]),
        "hf_equals_manifest": float(same),
        "clips": n,
        "manifest_read_s": C.median(read["manifest"]),
        "hf_read_s": C.median(read["hf"]),
        "quick": bool(args.quick),
        **C.device_info(),
    }
    C.log(
        f"{n} clips of 1-6 s (half at 44.1 kHz): index hf/manifest {res['hf_index_ratio']:.2f}x, "
        f"decode every clip hf/manifest {res['hf_read_ratio']:.2f}x ({res['hf_read_s']:.2f} s vs "
        f"{res['manifest_read_s']:.2f} s), streaming resume at micro-batch {m} / replaying it "
        f"{res['stream_skip_ratio']:.2f}x, identical: {same}"
    )
    C.emit(res)


if __name__ == "__main__":
    main()
