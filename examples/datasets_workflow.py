"""Train and evaluate from a Hugging Face dataset, check the model listens, and put the results on its model
card.

Needs the extra ``pip install 'mowe[datasets]'``. With ``--dataset`` (a ``save_to_disk`` folder, a parquet
file, an audiofolder or a hub id in the local cache) it trains on that; without it, it first writes a small
dataset of tones with an ``Audio`` column (clips at 44.1 kHz and 16 kHz, as real datasets mix them), so it
runs anywhere in seconds::

    python examples/datasets_workflow.py --out runs/hf_demo
    python examples/datasets_workflow.py --dataset my_ds --column answer=label --column task==emotion \\
        --out runs/x

Steps, each one public call (the same as the command line in brackets):

1. the run file's ``data.train`` names the dataset (``mowe train --set data.train=DATASET``; ``data.streaming:
   true`` streams it, ``data.columns`` names its columns) -> ``run_training``;
2. ``run_eval`` on the test split with the shuffled-audio control (``mowe eval --data DATASET --split test
   --audio-control shuffled``), which reports the gap per task and warns when the model does not use
   its audio;
3. the results go on the model card (``mowe eval ... --update-card``): ``README.md`` with a ``model-index``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from mowe.data.open_data import open_dataset, parse_column_args
from mowe.evaluation.eval_run import card_results, run_eval, write_eval_run
from mowe.hf.model_card import write_model_card
from mowe.inference import load_for_inference
from mowe.training.run_file import load_run_file, run_training

RUN_TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_tiny.yaml")


def write_tone_dataset(path: str, n_train: int = 24, n_test: int = 8) -> str:
    """A DatasetDict (train / test) of high and low tones with an Audio column, saved with save_to_disk."""
    import io

    import datasets
    import soundfile as sf

    def split(n: int, offset: int) -> datasets.Dataset:
        rows = {"id": [], "audio": [], "instruction": [], "answer": [], "task": []}
        for i in range(n):
            high, sr = (i % 2 == 1), (44_100 if i % 3 else 16_000)
            t = np.arange(int((0.4 + 0.02 * (i % 5)) * sr)) / sr
            buf = io.BytesIO()
            sf.write(
                buf,
                (0.4 * np.sin(2 * np.pi * (1800 if high else 250) * t)).astype(np.float32),
                sr,
                format="WAV",
                subtype="PCM_16",
            )
            rows["id"].append(f"tone{offset + i}")
            rows["audio"].append({"bytes": buf.getvalue(), "path": f"tone{offset + i}.wav"})
            rows["instruction"].append("Is the tone high or low?")
            rows["answer"].append("high" if high else "low")
            rows["task"].append("pitch")
        # cast_column, not features=: building through the Audio feature needs torchcodec
        return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())

    datasets.DatasetDict({"train": split(n_train, 0), "test": split(n_test, 1000)}).save_to_disk(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=None, help="a dataset (default: write a small one of tones)")
    ap.add_argument(
        "--column", action="append", help="FIELD=COLUMN or FIELD==constant (as mowe eval --column)"
    )
    ap.add_argument("--out", default="runs/hf_demo")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--streaming", action="store_true", help="stream the training split")
    args = ap.parse_args()
    data = args.dataset or write_tone_dataset(os.path.join(args.out, "tones_hf"))
    columns = parse_column_args(args.column)

    half = max(1, args.steps // 2)
    overrides = [
        f"data.train={os.path.abspath(data)}",
        "data.split=train",
        f"data.streaming={str(args.streaming).lower()}",
        f"train.output_dir={os.path.abspath(os.path.join(args.out, 'run'))}",
        "train.save_every=0",
        f"stages=[{{name: connector, train: [connector], steps: {half}, lr: 0.001}}, "
        f"{{name: mowe, train: [connector, routers, lora], steps: {args.steps - half}, lr: 0.001}}]",
    ]
    if columns:
        overrides.append(f"data.columns={columns}")
    final = run_training(load_run_file(RUN_TINY, overrides), base_dir=os.path.dirname(RUN_TINY))
    print(f"trained {args.steps} steps from {data} -> {final}")

    model, processor = load_for_inference(final)
    test = open_dataset(data, split="test", columns=columns or None)
    run = run_eval(model, processor, test, name="tiny", audio_control="shuffled", progress=False)
    print(write_eval_run(run, os.path.join(args.out, "eval")))
    model.card_info.add_results(
        card_results(run, dataset=os.path.basename(os.path.normpath(data)), split="test")
    )
    print(f"model card: {write_model_card(final, model.config, model.card_info)}")


if __name__ == "__main__":
    main()
