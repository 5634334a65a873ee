"""The ``mowe`` command line: ``train``, ``infer``, and (when their modules are present) ``eval`` and ``corpus``.

``mowe train --config run.yaml`` reads a run file (YAML or JSON) with these sections; every unknown key is an
error that names it (exit code 2, message on stderr, no traceback)::

    model:        a MoWEConfig as a dict (see mowe.config). llm.config.vocab_size defaults to the tokenizer's
                  size; audio_token_id defaults to the processor's placeholder id.
    tokenizer:    a tokenizer folder / hub id; ``llm``: the LLM's own tokenizer (from model.llm.name_or_path, its
                  GGUF file too, with the audio placeholder added; a folder named llm is ``./llm``); or
                  {train_bpe: {vocab_size: 400}} to train a byte-level BPE on the training manifest's instructions
                  and answers. An LLM loaded by name_or_path gets llm.vocab_size = len(tokenizer) when the
                  tokenizer has tokens past the LLM's rows other than a trailing audio placeholder (which
                  needs no row: its embedding is never looked up).
    processor:    optional MoWEProcessor options (system_prompt, prompt_template, paraphrases, ...).
    data:         train: manifest.jsonl (required); dev: manifest.jsonl (optional: its loss is logged);
                  on_bad_example: error | skip; max_audio_seconds: 30; tasks: [...] (keep only these).
    train:        a TrainConfig (output_dir, batch_size, grad_accum, save_every, ...).
    stages:       a list of stages ({name, train, steps, lr, tasks, warmup_steps, lora_scale}) or a preset:
                  {preset: mowe | salmonn | ltu_as, steps: N or [N1, N2, N3]} (``mowe_paper``, the name of the
                  model preset in mowe.presets, is accepted for ``mowe``).

Relative paths in the run file are relative to the run file's folder. ``--set section.key=value`` overrides
one entry (the value is parsed as YAML). The file and the overrides go through the one strict loader of
:mod:`mowe.config`: an unknown key, a wrong type or a bad choice is one error naming the key path. The trained model and its processor are written to
``<output_dir>/final`` (``MoWEAudioLLM.from_pretrained`` / ``MoWEProcessor.from_pretrained`` read it back);
``mowe infer --model <output_dir>`` (or ``<output_dir>/final``) answers a prompt about an audio file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mowe.config import apply_overrides, from_dict, read_config_file
from mowe.errors import ConfigError

__all__ = ["RUN_SECTIONS", "add_allow_components_arg", "add_generation_args", "build_parser", "load_for_inference",
           "load_run_file", "main", "place_model", "seed_everything"]

RUN_SECTIONS = ("model", "tokenizer", "processor", "data", "train", "stages")
LLM_TOKENIZER = "llm"  # `tokenizer: llm`: the LLM's own tokenizer (mowe.builders.llm_tokenizer)
# Stage presets by name; "mowe_paper" (the name of the model preset in mowe.presets) and "mowe" are the same.
_PRESETS = ("mowe", "mowe_paper", "salmonn", "ltu_as")


# ----------------------------------------------------------------------------------------------- run file
# The run file's shape, read by the one strict loader (mowe.config.from_dict). The sections built into library
# objects (model, train, stages as a list, processor) are checked by those objects' own from_dict.
@dataclass(frozen=True)
class DataSection:
    """``data``: the manifests and how to treat bad examples."""

    train: str
    dev: str | None = None
    on_bad_example: Literal["error", "skip"] = "error"
    max_audio_seconds: float | None = 30.0
    tasks: list[str] | None = None


@dataclass(frozen=True)
class BPEOptions:
    """``tokenizer.train_bpe``: options of :func:`mowe.data.tokenizer.train_bpe_tokenizer`."""

    vocab_size: int = 512
    special_tokens: list[str] | None = None


@dataclass(frozen=True)
class TokenizerSection:
    train_bpe: BPEOptions = field(default_factory=BPEOptions)


@dataclass(frozen=True)
class StagePreset:
    """``stages: {preset: ..., steps: ...}``."""

    preset: Literal["mowe", "mowe_paper", "salmonn", "ltu_as"]
    steps: int | list[int]


@dataclass(frozen=True)
class RunFile:
    """A whole run file."""

    model: dict[str, Any]
    tokenizer: str | TokenizerSection
    data: DataSection
    train: dict[str, Any]
    stages: list[dict[str, Any]] | StagePreset
    processor: dict[str, Any] | None = None


def load_run_file(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML / JSON run file, apply ``section.key=value`` overrides, check it with the strict loader.

    Raises:
        ConfigError: unreadable file, unknown section or key, wrong type, bad choice, malformed override
            (the message starts with the file and the key path, e.g. ``run.yaml: data.sampler: unknown key``).
    """
    path = os.fspath(path)
    run = read_config_file(path)
    if not isinstance(run, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {list(RUN_SECTIONS)}")
    apply_overrides(run, overrides)
    try:
        from_dict(RunFile, run, where="")
        _check_sections(run)  # value domains of the model / processor sections, before anything is built
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return run


def _check_sections(run: dict[str, Any]) -> None:
    from mowe.config import MoWEConfig
    from mowe.data.processor import ProcessorOptions

    cfg = from_dict(MoWEConfig, {k: v for k, v in run["model"].items() if not (k == "audio_token_id" and v is None)},
                    where="model")
    if run["tokenizer"] == LLM_TOKENIZER and not cfg.llm.name_or_path:
        raise ConfigError("tokenizer: 'llm' takes the LLM's own tokenizer, but model.llm.name_or_path is not set "
                          "(a random-weight LLM has none); give a tokenizer folder or {train_bpe: ...}")
    if run.get("processor"):
        from_dict(ProcessorOptions, run["processor"], where="processor")


def _resolve(base: str, p: str | None) -> str | None:
    if p is None:
        return None
    p = os.path.expanduser(str(p))
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


def _stages(spec: Any):
    from mowe import presets
    from mowe.training.stages import ltu_as_stages, mowe_default_stages, salmonn_stages, stages_from_list

    if not isinstance(spec, dict):
        return stages_from_list(spec)
    p = from_dict(StagePreset, spec, where="stages")
    if p.preset in ("mowe", "mowe_paper"):
        if not isinstance(p.steps, int):
            raise ConfigError("stages.steps: the mowe preset has one stage; give one integer")
        return mowe_default_stages(p.steps)
    if p.preset == "salmonn":  # the presets' task lists (mowe.presets), named after the demo corpus's tasks
        return salmonn_stages(p.steps, pretrain_tasks=presets.SALMONN_PRETRAIN_TASKS,
                              activation_tasks=presets.SALMONN_ACTIVATION_TASKS)
    return ltu_as_stages(p.steps, closed_ended_tasks=presets.LTU_AS_CLOSED_ENDED_TASKS)


def _tokenizer(spec: Any, train_manifest: str, base: str, train_ds: Any = None, *, model: Any = None,
               audio_token: str = "<|audio|>"):
    if spec == LLM_TOKENIZER:
        from mowe.builders import llm_tokenizer
        from mowe.config import LLMConfig

        return llm_tokenizer(from_dict(LLMConfig, (model or {}).get("llm") or {}, where="model.llm"),
                             audio_token=audio_token)
    if isinstance(spec, str):
        from transformers import AutoTokenizer

        path = _resolve(base, spec)
        if not os.path.exists(path):
            from mowe.hub import check_local_source

            check_local_source(spec, what=f"tokenizer (resolved to {path})")
        return AutoTokenizer.from_pretrained(path if os.path.exists(path) else spec)
    from mowe.data.tokenizer import train_bpe_tokenizer

    opts = from_dict(TokenizerSection, spec, where="tokenizer").train_bpe
    # A manifest that can be read only once (a FIFO, e.g. bash's <(...)) was consumed by the dataset: use its texts.
    once = train_ds is not None and not os.path.isfile(train_manifest)
    texts = train_ds.texts() if once else _manifest_texts(train_manifest)
    return train_bpe_tokenizer(texts, vocab_size=opts.vocab_size, special_tokens=opts.special_tokens)


def _manifest_texts(path: str):
    from mowe.io import open_for_reading

    with open_for_reading(path, encoding="utf-8-sig") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # the dataset reports malformed lines with their line numbers
            if isinstance(obj, dict):
                for k in ("instruction", "answer"):
                    if isinstance(obj.get(k), str):
                        yield obj[k]


def _model_config(model_spec: Any, tokenizer: Any, audio_token_id: int):
    from mowe.config import MoWEConfig, from_dict

    if not isinstance(model_spec, dict):
        raise ConfigError("model: expected a MoWEConfig mapping")
    spec = json.loads(json.dumps(model_spec))  # deep copy
    llm = spec.get("llm")
    if isinstance(llm, dict) and isinstance(llm.get("config"), dict):
        vocab = llm["config"].get("vocab_size")
        if vocab is None:
            llm["config"]["vocab_size"] = len(tokenizer)
        elif vocab < len(tokenizer):
            raise ConfigError(f"model.llm.config.vocab_size is {vocab} but the tokenizer has {len(tokenizer)} tokens")
    elif isinstance(llm, dict) and llm.get("name_or_path"):
        # the audio placeholder needs no row (mowe never looks its embedding up): only other added tokens count
        _fit_vocab(llm, len(tokenizer) - int(audio_token_id == len(tokenizer) - 1))
    if spec.get("audio_token_id") is None:
        spec["audio_token_id"] = audio_token_id
    elif spec["audio_token_id"] != audio_token_id:
        raise ConfigError(f"model.audio_token_id is {spec['audio_token_id']} but the tokenizer's audio placeholder "
                          f"has id {audio_token_id}; leave it out to use the tokenizer's")
    return from_dict(MoWEConfig, spec, where="model")


def _fit_vocab(llm: dict[str, Any], n_tokens: int) -> None:
    """An LLM loaded by name_or_path gets ``vocab_size = n_tokens`` when the tokenizer's tokens that need rows (all
    but a trailing audio placeholder) outnumber the LLM's rows; a ``vocab_size`` set too small is an error."""
    from mowe.builders import llm_vocab_size
    from mowe.config import LLMConfig

    if llm.get("vocab_size") is not None:
        if llm["vocab_size"] < n_tokens:
            raise ConfigError(f"model.llm.vocab_size is {llm['vocab_size']} but the tokenizer has {n_tokens} tokens")
        return
    if llm_vocab_size(from_dict(LLMConfig, llm, where="model.llm")) < n_tokens:
        llm["vocab_size"] = n_tokens


def run_training(run: dict[str, Any], *, base_dir: str, resume: str | None = None) -> str:
    """Build everything a run file names, train, and save ``final/`` (model + processor); returns that folder."""
    from mowe.data.manifest import ManifestDataset
    from mowe.data.processor import MoWECollator, MoWEProcessor, ProcessorOptions
    from mowe.model import MoWEAudioLLM
    from mowe.training.trainer import TrainConfig, Trainer

    data = run["data"]
    train_cfg = dict(run["train"]) if isinstance(run["train"], dict) else run["train"]
    if isinstance(train_cfg, dict) and "output_dir" in train_cfg:
        train_cfg["output_dir"] = _resolve(base_dir, train_cfg["output_dir"])
    config = TrainConfig.from_dict(train_cfg)
    seed_everything(config.seed)  # before the tokenizer and the model: two runs of one file build the same weights
    stages = _stages(run["stages"])
    train_manifest = _resolve(base_dir, data["train"])
    ds_kw = {"on_bad_example": data.get("on_bad_example", "error"),
                 "max_audio_seconds": data.get("max_audio_seconds", 30.0)}
    train_ds = ManifestDataset(train_manifest, tasks=data.get("tasks"), **ds_kw)
    dev_ds = ManifestDataset(_resolve(base_dir, data["dev"]), **ds_kw) if data.get("dev") else None
    proc_opts = {"max_audio_seconds": ds_kw["max_audio_seconds"], **(run.get("processor") or {})}
    tokenizer = _tokenizer(run["tokenizer"], train_manifest, base_dir, train_ds, model=run["model"],
                           audio_token=proc_opts.get("audio_token", "<|audio|>"))
    from_dict(ProcessorOptions, proc_opts, where="processor")  # unknown key / wrong type: names it
    if isinstance(run["tokenizer"], str):  # an LLM's own tokenizer: the placeholder becomes a special token of it
        from mowe.data.tokenizer import AUDIO_TOKEN, add_audio_token

        add_audio_token(tokenizer, proc_opts.get("audio_token", AUDIO_TOKEN))
    processor = MoWEProcessor(tokenizer, **proc_opts)
    model = MoWEAudioLLM.from_config(_model_config(run["model"], tokenizer, processor.audio_token_id))
    trainer = Trainer(model, train_ds, config=config, stages=stages, collate_fn=MoWECollator(processor, train=True),
                      eval_dataset=dev_ds)
    if trainer.is_main:
        os.makedirs(config.output_dir, exist_ok=True)
        processor.save_pretrained(os.path.join(config.output_dir, "processor"))
    result = trainer.train(resume=resume)
    final = result.final_dir or os.path.join(config.output_dir, "final")
    if trainer.is_main:
        if result.final_dir is None:
            model.save_pretrained(final)
        processor.save_pretrained(final)  # beside the weights: `mowe infer/eval --model final` find both
    return final


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (all devices) the way accelerate's ``set_seed`` does."""
    from accelerate.utils import set_seed

    set_seed(seed)


def add_allow_components_arg(p: argparse.ArgumentParser) -> None:
    """``--allow-components PKG`` (repeatable): packages outside mowe a saved model's config may name."""
    p.add_argument("--allow-components", action="append", metavar="PKG", default=None,
                   help="allow the saved model's config to build components from this package (and its "
                        "submodules); importing it runs its code. Repeatable")


# ----------------------------------------------------------------------------------------------- commands
def _cmd_train(args: argparse.Namespace) -> int:
    from mowe.training.distributed import check_launch

    check_launch(int(os.environ.get("WORLD_SIZE", "1")))  # a launcher that asked for N processes and started 1
    run = load_run_file(args.config, args.set or ())
    final = run_training(run, base_dir=os.path.dirname(os.path.abspath(args.config)), resume=args.resume)
    print(f"saved the trained model and processor to {final}")
    return 0


def _model_dir(path: str) -> str:
    """The saved model in ``path`` or ``path/final``; a hub id (``org/name``, no such local folder) as given."""
    from mowe.errors import CheckpointError
    from mowe.hub import looks_like_path

    for cand in (os.path.join(path, "final"), path):
        if os.path.isfile(os.path.join(cand, "config.json")) and os.path.isfile(os.path.join(cand,
                                                                                             "model.safetensors")):
            return cand
    if not os.path.exists(path) and not looks_like_path(path) and path.count("/") == 1:
        return path  # from_pretrained resolves hub ids (and names what it cannot find)
    raise CheckpointError(f"{path}: no saved model (config.json + model.safetensors) here or in {path}/final")


def load_for_inference(path: str | os.PathLike, *, device: str = "cpu", dtype: str | None = None,
                       processor: str | os.PathLike | None = None, allow_components: Sequence[str] | None = None):
    """``(model, processor)`` as ``mowe infer``, ``mowe eval`` and ``mowe serve`` load them: the model of a ``mowe
    train`` output folder (or its ``final/``, or any folder ``save_pretrained`` wrote) through
    :meth:`MoWEAudioLLM.from_pretrained` (weights, ``llm_adapter/``, generation config), in eval mode on ``device``
    (:func:`place_model` casts to ``dtype``), and the processor saved beside it (or in ``processor``).

    Raises:
        CheckpointError / ConfigError: no saved model or processor there (naming the file).
    """
    from mowe.data.processor import MoWEProcessor
    from mowe.model import MoWEAudioLLM

    model_dir = _model_dir(os.fspath(path))
    model = MoWEAudioLLM.from_pretrained(model_dir, allow_components=list(allow_components or ()))
    model = place_model(model, device=device, dtype=dtype).eval()
    return model, MoWEProcessor.from_pretrained(processor or model_dir)


def _cmd_infer(args: argparse.Namespace) -> int:
    import torch

    from mowe.data.processor import MODEL_INPUT_KEYS
    from mowe.training.stages import set_lora_scale

    model, processor = load_for_inference(args.model, device=args.device, dtype=args.dtype,
                                          processor=args.processor, allow_components=args.allow_components)
    if args.lora_scale is not None:
        set_lora_scale(model, args.lora_scale)
    batch = processor(text=args.prompt, audio=args.audio).to(args.device)
    with torch.no_grad():
        ids = model.generate(**{k: batch[k] for k in MODEL_INPUT_KEYS if k in batch},
                             max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    print(processor.decode(ids)[0])
    return 0


def place_model(model, *, device: str = "cpu", dtype: str | None = None):
    """``--device`` / ``--dtype``: move ``model`` to ``device``; cast its LLM and connector to ``dtype`` (the
    encoders keep the precision their config gives them: ``EncoderConfig.dtype``). Returns the model."""
    import torch

    model = model.to(device)
    if dtype is not None and dtype != "float32":
        for part in (model.llm, model.connector):
            part.to(getattr(torch, dtype))
    return model


def add_generation_args(p: argparse.ArgumentParser, *, max_new_tokens: int | None) -> None:
    """The options ``mowe infer`` and ``mowe eval`` share: --processor, --max-new-tokens, --num-beams, --device,
    --dtype (generation settings left unset come from the model's saved generation_config.json)."""
    p.add_argument("--processor", default=None, help="processor folder (default: the model folder)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help="default: the model's generation config" if max_new_tokens is None else None)
    p.add_argument("--num-beams", type=int, default=None, help="default: the model's generation config")
    p.add_argument("--device", default="cpu", help="torch device to run on, e.g. cuda:0 (default: cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="cast the LLM and the connector (default: as saved)")


def build_parser() -> argparse.ArgumentParser:
    """The ``mowe`` argument parser (``eval`` / ``corpus`` only when their modules import)."""
    parser = argparse.ArgumentParser(prog="mowe", description="audio LLMs from a mixture of weak encoders")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True

    p = sub.add_parser("train", help="train from a run file (YAML/JSON)")
    p.add_argument("--config", required=True, help="run file with model/tokenizer/data/train/stages sections")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one run-file entry (value parsed as YAML); repeatable")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("infer", help="answer a prompt about one audio file with a trained model")
    p.add_argument("--model", required=True, help="a `mowe train` output folder, or its final/ folder")
    p.add_argument("--audio", required=True, help="audio file")
    p.add_argument("--prompt", required=True, help="instruction, e.g. 'Transcribe the speech.'")
    add_generation_args(p, max_new_tokens=None)
    p.add_argument("--lora-scale", type=float, default=None,
                   help="multiply the LoRA scaling (SALMONN's activation trick, e.g. 0.5)")
    add_allow_components_arg(p)
    p.set_defaults(func=_cmd_infer)

    try:
        from mowe.evaluation.evaluate import add_eval_cli
    except ImportError:
        pass
    else:
        add_eval_cli(sub)
    from mowe.serve import add_serve_cli

    add_serve_cli(sub)
    from mowe.convert import add_convert_cli

    add_convert_cli(sub)
    try:
        from mowe.demo.corpus import add_corpus_cli
    except ImportError:
        pass
    else:
        add_corpus_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mowe`` console script; returns the exit code.

    Every expected failure (config, data, checkpoint, file system, non-finite loss, Ctrl-C) prints one line
    ``mowe <command>: error: ...`` naming the file, key or flag, and returns the exit code documented in
    :mod:`mowe.cli_errors` (2 config, 3 data, 4 checkpoint, 5 file system, 6 non-finite loss, 130 interrupt);
    tracebacks only with ``--debug``.
    """
    from mowe.cli_errors import add_debug_flag, check_flags, quiet_dependency_warnings, run_command

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
