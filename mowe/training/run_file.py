"""Run files: the schema ``mowe train --config run.yaml`` reads, and :func:`run_training`, which builds and
trains what one names.

A run file (YAML or JSON) with these sections; every unknown key is an
error that names it (exit code 2, message on stderr, no traceback)::

    model:        a MoWEConfig as a dict (see mowe.config). llm.config.vocab_size defaults to the tokenizer's
                  size; audio_token_id defaults to the processor's placeholder id.
    tokenizer:    a tokenizer folder / hub id; ``llm``: the LLM's own tokenizer (from model.llm.name_or_path,
                  its GGUF file too, with the audio placeholder added; a folder named llm is ``./llm``); or
                  {train_bpe: {vocab_size: 400}} to train a byte-level BPE on the training manifest's
                  instructions and answers. An LLM loaded by name_or_path gets llm.vocab_size = len(tokenizer)
                  when the tokenizer has tokens past the LLM's rows other than a trailing audio placeholder
                  (which
                  needs no row: its embedding is never looked up).
    processor:    optional MoWEProcessor options (system_prompt, prompt_template, paraphrases, ...).
    data:         train: manifest.jsonl or a Hugging Face dataset (required: a save_to_disk or audiofolder
                  folder, a parquet / arrow file, or a hub id in the local cache); dev: the same (optional:
                  its loss is logged); on_bad_example: error | skip; max_audio_seconds: 30; tasks: [...] (keep
                  only these). For datasets: columns: {audio, instruction, answer, task, id, duration} (a
                  column name, or '=constant'); split / dev_split: the split of a DatasetDict folder or hub
                  dataset (default train); streaming: true (train: read as an IterableDataset, see
                  mowe.data.stream_sampler).
    train:        a TrainConfig (output_dir, batch_size, grad_accum, save_every, ...).
    stages:       a list of stages ({name, train, steps, lr, tasks, warmup_steps, lora_scale}) or a preset:
                  {preset: NAME, steps: N or [N1, N2, N3]}, NAME one of mowe.presets.STAGE_PRESETS: mowe |
                  salmonn | ltu_as (``mowe_paper``, the name of the model preset in mowe.presets, is accepted
                  for ``mowe``).

Relative paths in the run file are relative to the run file's folder. ``--set section.key=value`` overrides
one entry (the value is parsed as YAML). The file and the overrides go through the one strict loader of
:mod:`mowe.config`: an unknown key, a wrong type or a bad choice is one error naming the key path. The trained
model and its processor are written to ``<output_dir>/final`` (``MoWEAudioLLM.from_pretrained`` /
``MoWEProcessor.from_pretrained`` read it back); ``mowe infer --model <output_dir>`` (or
``<output_dir>/final``) answers a prompt about an audio file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from accelerate.utils import set_seed
from transformers import AutoTokenizer

from mowe.builders import llm_tokenizer, llm_vocab_size
from mowe.config import LLMConfig, MoWEConfig, apply_overrides, from_dict, read_config_file
from mowe.curriculum import stages_from_list
from mowe.data.collator import MoWECollator
from mowe.data.hf_sources import is_hf_source
from mowe.data.manifest import ManifestDataset
from mowe.data.open_data import open_dataset
from mowe.data.processor import MoWEProcessor
from mowe.data.processor_options import ProcessorOptions
from mowe.data.tokenizer import add_audio_token, train_bpe_tokenizer
from mowe.errors import ConfigError
from mowe.hub import check_local_source
from mowe.io import open_for_reading
from mowe.model import MoWEAudioLLM
from mowe.presets import STAGE_PRESETS
from mowe.training.trainer import TrainConfig, Trainer

__all__ = ["LLM_TOKENIZER", "RUN_SECTIONS", "RunFile", "load_run_file", "run_training", "seed_everything"]

RUN_SECTIONS = ("model", "tokenizer", "processor", "data", "train", "stages")
LLM_TOKENIZER = "llm"  # `tokenizer: llm`: the LLM's own tokenizer (mowe.builders.llm_tokenizer)


# ----------------------------------------------------------------------------------------------- run file
# The run file's shape, read by the one strict loader (mowe.config.from_dict). The sections built into library
# objects (model, train, stages as a list, processor) are checked by those objects' own from_dict.
@dataclass(frozen=True)
class DataSection:
    """``data``: the manifests and how to treat bad examples."""

    train: str
    dev: str | None = None
    on_bad_example: Literal["error", "skip"] = "error"
    max_audio_seconds: float | None = ProcessorOptions.max_audio_seconds  # the processor's default
    tasks: list[str] | None = None
    columns: dict[str, str] | None = None
    split: str | None = None
    dev_split: str | None = None
    streaming: bool = False


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
    """``stages: {preset: ..., steps: ...}``: ``preset`` names an entry of
    :data:`mowe.presets.STAGE_PRESETS`."""

    preset: str
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
    cfg = from_dict(
        MoWEConfig,
        {k: v for k, v in run["model"].items() if not (k == "audio_token_id" and v is None)},
        where="model",
    )
    if run["tokenizer"] == LLM_TOKENIZER and not cfg.llm.name_or_path:
        raise ConfigError(
            "tokenizer: 'llm' takes the LLM's own tokenizer, but model.llm.name_or_path is not set "
            "(a random-weight LLM has none); give a tokenizer folder or {train_bpe: ...}"
        )
    if run.get("processor"):
        from_dict(ProcessorOptions, run["processor"], where="processor")
    # each stage's values by Stage's own checks (those a Stage built in Python gets), or the preset's name
    _stages(run["stages"])


def _resolve(base: str, p: str | None) -> str | None:
    if p is None:
        return None
    p = os.path.expanduser(str(p))
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


def _source(base: str, p: str) -> str:
    """A data source: a local path resolved against the run file's folder; a hub id as it is."""
    local = _resolve(base, p)
    return p if not os.path.exists(local) and is_hf_source(p) else local


def _hf_options(source: str, data: dict[str, Any], split_key: str, streaming: Any) -> dict[str, Any]:
    """``columns`` / split / ``streaming`` for a Hugging Face source; a manifest (e.g. a JSONL dev set beside
    a dataset) takes none of them, and ``streaming`` on a manifest is an error naming it."""
    if not is_hf_source(source):
        return {"streaming": bool(streaming)}  # open_dataset refuses streaming=True for a manifest, naming it
    return {"columns": data.get("columns"), "split": data.get(split_key), "streaming": bool(streaming)}


def _stages(spec: Any):
    if not isinstance(spec, dict):
        return stages_from_list(spec)
    p = from_dict(StagePreset, spec, where="stages")
    if p.preset not in STAGE_PRESETS:
        raise ConfigError(f"stages.preset: {p.preset!r} is not one of {sorted(STAGE_PRESETS)}")
    return STAGE_PRESETS[p.preset](p.steps)  # the presets' task lists, named after the demo corpus's tasks


def _tokenizer(
    spec: Any,
    train_manifest: str,
    base: str,
    train_ds: Any = None,
    *,
    model: Any = None,
    audio_token: str = "<|audio|>",
):
    if spec == LLM_TOKENIZER:
        return llm_tokenizer(
            from_dict(LLMConfig, (model or {}).get("llm") or {}, where="model.llm"), audio_token=audio_token
        )
    if isinstance(spec, str):
        path = _resolve(base, spec)
        if not os.path.exists(path):
            check_local_source(spec, what=f"tokenizer (resolved to {path})")
        return AutoTokenizer.from_pretrained(path if os.path.exists(path) else spec)
    opts = from_dict(TokenizerSection, spec, where="tokenizer").train_bpe
    # A manifest that can be read only once (a FIFO, e.g. bash's <(...)) was consumed by the dataset: use its
    # texts.
    once = train_ds is not None and (
        not isinstance(train_ds, ManifestDataset) or not os.path.isfile(train_manifest)
    )
    texts = train_ds.texts() if once else _manifest_texts(train_manifest)
    return train_bpe_tokenizer(texts, vocab_size=opts.vocab_size, special_tokens=opts.special_tokens)


def _manifest_texts(path: str):
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
    if not isinstance(model_spec, dict):
        raise ConfigError("model: expected a MoWEConfig mapping")
    spec = json.loads(json.dumps(model_spec))  # deep copy
    llm = spec.get("llm")
    if isinstance(llm, dict) and isinstance(llm.get("config"), dict):
        vocab = llm["config"].get("vocab_size")
        if vocab is None:
            llm["config"]["vocab_size"] = len(tokenizer)
        elif vocab < len(tokenizer):
            raise ConfigError(
                f"model.llm.config.vocab_size is {vocab} but the tokenizer has {len(tokenizer)} tokens"
            )
    elif isinstance(llm, dict) and llm.get("name_or_path"):
        # the audio placeholder needs no row (mowe never looks its embedding up): only other added tokens
        # count
        _fit_vocab(llm, len(tokenizer) - int(audio_token_id == len(tokenizer) - 1))
    if spec.get("audio_token_id") is None:
        spec["audio_token_id"] = audio_token_id
    elif spec["audio_token_id"] != audio_token_id:
        raise ConfigError(
            f"model.audio_token_id is {spec['audio_token_id']} but the tokenizer's audio placeholder "
            f"has id {audio_token_id}; leave it out to use the tokenizer's"
        )
    return from_dict(MoWEConfig, spec, where="model")


def _fit_vocab(llm: dict[str, Any], n_tokens: int) -> None:
    """An LLM loaded by name_or_path gets ``vocab_size = n_tokens`` when the tokenizer's tokens that need rows
    (all but a trailing audio placeholder) outnumber the LLM's rows; a ``vocab_size`` set too small is an
       error."""
    if llm.get("vocab_size") is not None:
        if llm["vocab_size"] < n_tokens:
            raise ConfigError(
                f"model.llm.vocab_size is {llm['vocab_size']} but the tokenizer has {n_tokens} tokens"
            )
        return
    if llm_vocab_size(from_dict(LLMConfig, llm, where="model.llm")) < n_tokens:
        llm["vocab_size"] = n_tokens


def run_training(run: dict[str, Any], *, base_dir: str, resume: str | None = None) -> str:
    """Build everything a run file names, train, and save ``final/`` (model + processor); returns that
    folder."""

    data = run["data"]
    train_cfg = dict(run["train"]) if isinstance(run["train"], dict) else run["train"]
    if isinstance(train_cfg, dict) and "output_dir" in train_cfg:
        train_cfg["output_dir"] = _resolve(base_dir, train_cfg["output_dir"])
    config = TrainConfig.from_dict(train_cfg)
    seed_everything(
        config.seed
    )  # before the tokenizer and the model: two runs of one file build the same weights
    stages = _stages(run["stages"])
    train_manifest = data["train"]
    ds_kw = {
        "on_bad_example": data.get("on_bad_example", "error"),
        "max_audio_seconds": data.get("max_audio_seconds", DataSection.max_audio_seconds),
    }
    train_src = _source(base_dir, train_manifest)
    train_ds = open_dataset(
        train_src,
        tasks=data.get("tasks"),
        **_hf_options(train_src, data, "split", data.get("streaming")),
        **ds_kw,
    )
    dev_ds = None
    if data.get("dev"):
        dev = _source(base_dir, data["dev"])
        dev_ds = open_dataset(dev, **_hf_options(dev, data, "dev_split", False), **ds_kw)
    proc_opts = from_dict(
        ProcessorOptions,
        {"max_audio_seconds": ds_kw["max_audio_seconds"], **(run.get("processor") or {})},
        where="processor",
    )
    tokenizer = _tokenizer(
        run["tokenizer"], train_src, base_dir, train_ds, model=run["model"], audio_token=proc_opts.audio_token
    )
    if isinstance(
        run["tokenizer"], str
    ):  # an LLM's own tokenizer: the placeholder becomes a special token of it
        add_audio_token(tokenizer, proc_opts.audio_token)
    processor = MoWEProcessor(tokenizer, options=proc_opts)
    model = MoWEAudioLLM.from_config(_model_config(run["model"], tokenizer, processor.audio_token_id))
    model.card_info.training_data = [str(data["train"])]  # the model card's data, as the run file names it
    trainer = Trainer(
        model,
        train_ds,
        config=config,
        stages=stages,
        collate_fn=MoWECollator(processor, train=True),
        eval_dataset=dev_ds,
    )
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
    set_seed(seed)
