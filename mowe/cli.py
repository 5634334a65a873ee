"""The ``mowe`` command line: ``train``, ``infer``, ``eval``, ``data``, ``serve``, ``convert`` and ``corpus``.

Each command parses its arguments, calls the library and maps errors to exit codes (:mod:`mowe.cli_errors`).
The run file ``mowe train --config run.yaml`` reads is described in :mod:`mowe.training.run_file`;
``mowe infer --model <output_dir>`` (or ``<output_dir>/final``) answers a prompt about an audio file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from mowe.cli_convert import add_convert_cli
from mowe.cli_errors import (
    add_allow_components_arg,
    add_debug_flag,
    add_generation_args,
    check_flags,
    quiet_dependency_warnings,
    run_command,
)
from mowe.data.benchmark_formats import open_benchmark
from mowe.data.export import dataset_to_manifests, manifests_to_dataset
from mowe.data.hf_sources import is_hf_source
from mowe.data.open_data import open_dataset, parse_column_args
from mowe.demo.corpus import add_corpus_cli
from mowe.errors import ConfigError
from mowe.evaluation.benchmarks import BENCHMARK_FORMATS
from mowe.evaluation.controls import CONTROLS
from mowe.evaluation.eval_run import card_results, run_eval, write_eval_run
from mowe.evaluation.metrics import METRICS, normalize_text
from mowe.hf.adapter import set_lora_scale
from mowe.hf.model_card import write_model_card
from mowe.inference import answer_audio_file, find_model_dir, load_for_inference
from mowe.serve import add_serve_cli
from mowe.training.distributed import check_launch
from mowe.training.run_file import load_run_file, run_training

__all__ = ["build_parser", "main"]


# ----------------------------------------------------------------------------------------------- commands
def _cmd_train(args: argparse.Namespace) -> int:
    check_launch(
        int(os.environ.get("WORLD_SIZE", "1"))
    )  # a launcher that asked for N processes and started 1
    run = load_run_file(args.config, args.set or ())
    final = run_training(run, base_dir=os.path.dirname(os.path.abspath(args.config)), resume=args.resume)
    print(f"saved the trained model and processor to {final}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    model, processor = load_for_inference(
        args.model,
        device=args.device,
        dtype=args.dtype,
        processor=args.processor,
        allow_components=args.allow_components,
    )
    if args.lora_scale is not None:
        set_lora_scale(model, args.lora_scale)
    _long_audio_options(processor, args)
    answer, _ = answer_audio_file(
        model,
        processor,
        args.audio,
        args.prompt,
        length_policy=None,
        windows_per_batch=args.windows_per_batch,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )
    print(answer)
    return 0


def _eval_dataset(args: argparse.Namespace, processor: Any) -> Any:
    kw = {"on_bad_example": args.on_bad_example}
    chunk = processor.length_policy == "chunk"
    if chunk:  # whole clips, for the processor to cut into windows
        kw["max_audio_seconds"] = None
    if args.format:
        return open_benchmark(args.data, args.format, split=args.split, task=args.task, **kw)
    # A manifest's files go to the processor as paths under "chunk": read window by window, never whole.
    return open_dataset(
        args.data,
        columns=parse_column_args(args.column) or None,
        split=args.split,
        audio_as_path=chunk,
        **({"length_policy": "chunk"} if chunk else {}),
        **kw,
    )


def _long_audio_options(processor, args: argparse.Namespace) -> None:
    """``--length-policy`` and ``--max-audio-seconds`` onto the loaded processor."""
    changes = {} if args.length_policy == "processor" else {"length_policy": args.length_policy}
    if args.max_audio_seconds is not None:  # checked positive by check_flags
        changes["max_duration_seconds"] = args.max_audio_seconds
    if changes:
        processor.options = processor.options.replace(**changes)


def _add_long_audio_args(p: argparse.ArgumentParser, *, policy: str) -> None:
    what = {"chunk": "'chunk' (default) reads all of it", "processor": "'chunk' reads all of it"}[policy]
    p.add_argument(
        "--length-policy",
        choices=["chunk", "truncate", "processor"],
        default=policy,
        help=f"audio longer than the processor's max_audio_seconds: {what}, decoded and encoded "
        "window by window (one placeholder per window); 'truncate' the first window; "
        "'processor' "
        f"{'(default) ' if policy == 'processor' else ''}the saved processor's own policy",
    )
    p.add_argument(
        "--max-audio-seconds",
        type=float,
        default=None,
        help="longest audio read in full (default: the processor's max_duration_seconds, 3600); "
        "longer files are an error naming the file and the limit",
    )


def _cmd_eval(args) -> int:
    model, processor = load_for_inference(
        args.model,
        device=args.device,
        dtype=args.dtype,
        processor=args.processor,
        allow_components=getattr(args, "allow_components", None),
    )
    _long_audio_options(processor, args)
    dataset = _eval_dataset(args, processor)
    task_metrics = {}
    for item in args.metric or ():
        task, sep, metric = item.partition("=")
        if not sep or metric not in METRICS:
            raise ConfigError(f"--metric {item!r}: expected TASK=METRIC with METRIC one of {list(METRICS)}")
        task_metrics[task] = metric
    spell = args.spell_digits

    def normalize(s: str) -> str:
        return normalize_text(s, spell_digits=spell)

    run = run_eval(
        model,
        processor,
        dataset,
        name=os.path.basename(os.path.normpath(args.model)),
        benchmark_format=args.format,
        audio_control=args.audio_control,
        control_seed=args.control_seed,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        task_metrics=task_metrics,
        normalize=normalize,
    )
    out = args.out or os.path.join(args.model, "eval")
    print(write_eval_run(run, out))
    print(f"wrote the report to {out}")
    if args.update_card:
        model_dir = find_model_dir(args.model)
        name = args.data if not os.path.exists(args.data) else os.path.basename(os.path.normpath(args.data))
        model.card_info.add_results(card_results(run, dataset=name, split=args.split, normalize=normalize))
        print(f"updated the model card {write_model_card(model_dir, model.config, model.card_info)}")
    if getattr(dataset, "skipped", None):
        print(dataset.skip_report())
    return 0


def _add_eval_cli(subparsers: Any) -> Any:
    """Register ``mowe eval --model DIR --data test.jsonl|DATASET [--format F] [--audio-control C]``."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a saved model on a manifest, a Hugging Face dataset or "
        "a benchmark (per-task metrics, audio controls)",
    )
    p.add_argument("--model", required=True, help="folder written by save_pretrained / mowe train")
    p.add_argument(
        "--data",
        "--manifest",
        dest="data",
        required=True,
        help="JSONL manifest (audio, instruction, answer, task), a Hugging Face dataset "
        "(save_to_disk or audiofolder folder, parquet / arrow file, hub id in the local "
        "cache), or with --format the benchmark's file",
    )
    p.add_argument(
        "--column",
        action="append",
        metavar="FIELD=COLUMN",
        help="for a dataset: the column holding FIELD (audio, instruction, answer, task, id, "
        "duration); FIELD==value for a constant; repeatable",
    )
    p.add_argument(
        "--split", default=None, help="the split of a DatasetDict folder or hub dataset (default train)"
    )
    p.add_argument(
        "--format",
        choices=list(BENCHMARK_FORMATS),
        default=None,
        help="read and score the data as this benchmark does (its fields and its matching rule)",
    )
    p.add_argument(
        "--task",
        default=None,
        help="with --format: the task name (dynamic-superb: default the dataset's name)",
    )
    p.add_argument(
        "--audio-control",
        choices=list(CONTROLS),
        default=None,
        help="also run the set with the audio shuffled across examples or silenced; report the "
        "gap and warn when the model does not use the audio",
    )
    p.add_argument("--control-seed", type=int, default=0, help="seed of the shuffled control")
    p.add_argument(
        "--update-card",
        action="store_true",
        help="add the results (value, n, 95%% interval per task) to the model folder's README.md "
        "model card (model-index)",
    )
    add_generation_args(p, max_new_tokens=24)
    p.add_argument("--out", default=None, help="report folder (default: MODEL/eval)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--on-bad-example", choices=["error", "skip"], default="error")
    p.add_argument(
        "--metric",
        action="append",
        metavar="TASK=METRIC",
        help=f"score TASK with METRIC ({', '.join(METRICS)}); repeatable; other tasks: accuracy "
        "(the README lists the demo corpus's settings)",
    )
    p.add_argument(
        "--spell-digits",
        action="store_true",
        help="spell digits as words before scoring (references written as a voice reads digits)",
    )
    _add_long_audio_args(p, policy="processor")
    add_allow_components_arg(p)
    p.set_defaults(func=_cmd_eval)
    return p


def _cmd_data_export(args: argparse.Namespace) -> int:
    src = args.source
    to_dataset = (
        args.to == "dataset"
        if args.to
        else not is_hf_source(src)
        or (os.path.isdir(src) and any(n.endswith(".jsonl") for n in os.listdir(src)))
    )
    if to_dataset:
        dd = manifests_to_dataset(src, args.out)
        splits = ", ".join(f"{k} ({len(v)} examples)" for k, v in dd.items())
        print(f"wrote {splits} as a Hugging Face dataset to {args.out} (datasets.load_from_disk)")
    else:
        written = dataset_to_manifests(src, args.out, columns=parse_column_args(args.column) or None)
        print(f"wrote {', '.join(written.values())}")
    return 0


def _add_data_cli(subparsers: Any) -> Any:
    """Register ``mowe data export SRC OUT``."""
    p = subparsers.add_parser("data", help="convert between JSONL manifests and Hugging Face datasets")
    sub = p.add_subparsers(dest="data_command", metavar="data_command")
    sub.required = True
    e = sub.add_parser(
        "export",
        help="a manifest folder (or .jsonl) to a dataset folder (save_to_disk), or "
        "a dataset to a manifest folder; the audio bytes are copied unchanged",
    )
    e.add_argument(
        "source",
        help="a folder of *.jsonl manifests / one manifest, or a dataset (folder, "
        "parquet, arrow, hub id in the cache)",
    )
    e.add_argument("out", help="the folder to write")
    e.add_argument(
        "--to",
        choices=["dataset", "manifest"],
        default=None,
        help="the direction (default: from what SOURCE is)",
    )
    e.add_argument(
        "--column",
        action="append",
        metavar="FIELD=COLUMN",
        help="dataset -> manifest: the column holding FIELD (as mowe eval --column); repeatable",
    )
    e.set_defaults(func=_cmd_data_export)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``mowe`` argument parser."""
    parser = argparse.ArgumentParser(prog="mowe", description="audio LLMs from a mixture of weak encoders")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True

    p = sub.add_parser("train", help="train from a run file (YAML/JSON)")
    p.add_argument("--config", required=True, help="run file with model/tokenizer/data/train/stages sections")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one run-file entry (value parsed as YAML); repeatable",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("infer", help="answer a prompt about one audio file with a trained model")
    p.add_argument("--model", required=True, help="a `mowe train` output folder, or its final/ folder")
    p.add_argument("--audio", required=True, help="audio file")
    p.add_argument("--prompt", required=True, help="instruction, e.g. 'Transcribe the speech.'")
    add_generation_args(p, max_new_tokens=None)
    p.add_argument(
        "--lora-scale",
        type=float,
        default=None,
        help="multiply the LoRA scaling (the activation-tuning trick, e.g. 0.5)",
    )
    _add_long_audio_args(p, policy="chunk")
    p.add_argument(
        "--windows-per-batch",
        type=int,
        default=None,
        help="windows of a long file encoded together (memory vs speed; default 1 on CPU, 8 on GPU)",
    )
    add_allow_components_arg(p)
    p.set_defaults(func=_cmd_infer)

    _add_eval_cli(sub)
    _add_data_cli(sub)
    add_serve_cli(sub)
    add_convert_cli(sub)
    add_corpus_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mowe`` console script; returns the exit code.

    Every expected failure (config, data, checkpoint, file system, non-finite loss, Ctrl-C) prints one line
    ``mowe <command>: error: ...`` naming the file, key or flag, and returns the exit code documented in
    :mod:`mowe.cli_errors` (2 config, 3 data, 4 checkpoint, 5 file system, 6 non-finite loss, 130 interrupt);
    tracebacks only with ``--debug``.
    """
    quiet_dependency_warnings()  # dependencies' internal deprecations; the user's own warnings still show
    parser = build_parser()
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def command() -> int:
        check_flags(args)  # --max-new-tokens, --num-beams, --batch-size ... in range, naming the flag
        return args.func(args)

    return run_command(args.command, command, debug=getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
