"""The bad-input zoo: every class of bad input gets a named error, a documented exit code, and nothing hangs.

Each case states the error type it expects and the file, key or flag the message must name. Every case runs
under a per-case alarm (``CASE_TIMEOUT``: a hang fails the case instead of blocking CI), CLI cases run
``mowe.cli.main`` in-process and check stderr has one ``mowe <command>: error:`` line and no traceback, and
the cases about hangs and tracebacks also run the real ``python -m mowe`` in a subprocess with a timeout.
Classes: special files, YAML alias bombs, values out of range, CLI flags, paths, full / read-only disks, the
CLI's mapping of failures, resumes, file names, silent partial success.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _bad_input_helpers import (  # noqa: F401 (per_case_timeout: an autouse fixture)
    _FLOW_BOMB,
    _LLAMA,
    CASE_TIMEOUT,
    _bomb,
    _cli,
    _fifo,
    _manifest,
    _raise,
    _run_file,
    _wav,
    per_case_timeout,
)

from mowe.cli import main
from mowe.cli_errors import describe, run_command
from mowe.config import LLMConfig, LoRAConfig, MoWEConfig, from_dict, read_config_file
from mowe.data.audio import load_audio
from mowe.data.manifest import ManifestDataset
from mowe.errors import AudioLoadError, CheckpointError, ConfigError, ManifestError, NonFiniteLossError
from mowe.training.config import TrainConfig
from mowe.training.run_file import load_run_file


# ================================================================================ 1. special files
def _fifo_config(tmp):
    read_config_file(_fifo(tmp, "run.yaml"))


def _fifo_manifest(tmp):
    ManifestDataset(_fifo(tmp, "train.jsonl"))


def _fifo_model_config(tmp):
    from mowe import MoWEAudioLLM

    d = tmp / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    _fifo(d, "config.json")
    MoWEAudioLLM.from_pretrained(d)


def _fifo_processor_config(tmp):
    from mowe.data.processor import MoWEProcessor

    d = tmp / "proc"
    d.mkdir()
    _fifo(d, "processor_config.json")
    MoWEProcessor.from_pretrained(d, tokenizer=object())


def _fifo_trainer_state(tmp):
    from mowe.training.checkpoint import load_trainer_state

    d = tmp / "step-2"
    d.mkdir()
    _fifo(d, "trainer_state.json")
    load_trainer_state(d)


def _fifo_audio(tmp):
    load_audio(_fifo(tmp, "clip.wav"))


def _device_config(tmp):
    read_config_file("/dev/zero")


def _device_manifest(tmp):
    ManifestDataset("/dev/zero")


def _directory_manifest(tmp):
    ManifestDataset(tmp)


@dataclass
class Case:
    name: str
    run: Callable[[Path], object]
    error: type[BaseException]
    match: str  # a regex the message must match: it names the file, key or flag


API_CASES = [
    Case("fifo-run-file", _fifo_config, ConfigError, r"run\.yaml.*FIFO.*no writer"),
    Case("fifo-manifest", _fifo_manifest, ManifestError, r"train\.jsonl.*FIFO"),
    Case("fifo-config-json", _fifo_model_config, ConfigError, r"config\.json.*FIFO"),
    Case("fifo-processor-config", _fifo_processor_config, ConfigError, r"processor_config\.json.*FIFO"),
    Case("fifo-trainer-state", _fifo_trainer_state, CheckpointError, r"trainer_state\.json.*FIFO"),
    Case("fifo-audio", _fifo_audio, AudioLoadError, r"clip\.wav.*not a regular file"),
    Case("char-device-config", _device_config, ConfigError, r"/dev/zero.*character device"),
    Case("char-device-manifest", _device_manifest, ManifestError, r"/dev/zero.*character device"),
    Case("directory-manifest", _directory_manifest, ManifestError, r"directory"),
]


# ================================================================================ 2. YAML alias bombs
def _yaml_case(text: str) -> Callable[[Path], object]:
    def run(tmp):
        p = tmp / "bomb.yaml"
        p.write_text(text)
        return read_config_file(p)

    return run


def _set_case(item: str) -> Callable[[Path], object]:
    return lambda tmp: load_run_file(_run_file(tmp), [item])


_OPTIONS_BOMB = "model:\n  connector:\n    kind: stack\n    options:\n" + textwrap.indent(_bomb(), "      ")
_PARAPHRASE_BOMB = "processor:\n  paraphrases:\n" + textwrap.indent(_bomb(key="q"), "    ")

API_CASES += [
    Case("alias-bomb-connector-options", _yaml_case(_OPTIONS_BOMB), ConfigError, r"bomb\.yaml.*alias"),
    Case("alias-bomb-paraphrases", _yaml_case(_PARAPHRASE_BOMB), ConfigError, r"bomb\.yaml.*alias"),
    Case("alias-bomb-json-suffix-as-yaml", _yaml_case("a: " + _FLOW_BOMB), ConfigError, r"alias"),
    Case(
        "alias-bomb-via-set",
        _set_case("model.connector.options=" + _FLOW_BOMB),
        ConfigError,
        r"--set model\.connector\.options.*alias",
    ),
    Case(
        "alias-bomb-via-set-paraphrases",
        _set_case("processor.paraphrases=" + _FLOW_BOMB),
        ConfigError,
        r"--set processor\.paraphrases.*alias",
    ),
    Case("recursive-alias", _yaml_case("a: &a [1, *a]"), ConfigError, r"bomb\.yaml.*recursive"),
    Case("deep-nesting", _yaml_case("a: " + "[" * 1500 + "]" * 1500), ConfigError, r"bomb\.yaml"),
]


# ================================================================================ 3. values out of range
def _model_case(section: dict) -> Callable[[Path], object]:
    return lambda tmp: from_dict(MoWEConfig, section, where="model")


def _run_case(path: str, value) -> Callable[[Path], object]:
    def edit(run):
        node = run
        *parents, last = path.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[last] = value

    return lambda tmp: load_run_file(_run_file(tmp, edit))


def _train_case(**kw) -> Callable[[Path], object]:
    return lambda tmp: TrainConfig.from_dict({"output_dir": str(tmp / "o"), **kw})


def _stage_case(**kw) -> Callable[[Path], object]:
    from mowe.curriculum import stages_from_list

    return lambda tmp: stages_from_list([{"name": "s", "train": ["connector"], "steps": 2, "lr": 1e-3, **kw}])


def _output_dir_is_file(tmp):
    (tmp / "taken").write_text("x")
    TrainConfig(output_dir=str(tmp / "taken"))


def _output_dir_under_file(tmp):
    (tmp / "taken").write_text("x")
    TrainConfig(output_dir=str(tmp / "taken" / "run"))


API_CASES += [
    Case("seed-2**70", _train_case(seed=2**70), ConfigError, r"train\.seed.*\[0, 4294967295\]"),
    Case("seed-negative", _train_case(seed=-1), ConfigError, r"train\.seed"),
    Case(
        "lora-r-0", _model_case({"lora": {"r": 0}}), ConfigError, r"model\.lora\.r: must be an integer >= 1"
    ),
    Case(
        "lora-dropout-1.5",
        _model_case({"lora": {"dropout": 1.5}}),
        ConfigError,
        r"model\.lora\.dropout.*\[0, 1\)",
    ),
    Case("lora-alpha-0", _model_case({"lora": {"alpha": 0}}), ConfigError, r"model\.lora\.alpha"),
    Case(
        "router-hidden-negative",
        _model_case({"router": {"hidden_dim": -4}}),
        ConfigError,
        r"model\.router\.hidden_dim: must be an integer >= 1",
    ),
    Case("router-top-k-0", _model_case({"router": {"top_k": 0}}), ConfigError, r"model\.router\.top_k"),
    Case(
        "router-aux-weight-negative",
        _model_case({"router": {"aux_loss_weight": -1.0}}),
        ConfigError,
        r"model\.router\.aux_loss_weight",
    ),
    Case(
        "router-noise-nan",
        _model_case({"router": {"noise_std": float("nan")}}),
        ConfigError,
        r"model\.router\.noise_std.*finite",
    ),
    Case(
        "kv-heads-do-not-divide",
        _model_case({"llm": {"config": {**_LLAMA, "num_key_value_heads": 3}}}),
        ConfigError,
        r"model\.llm\.config\.num_key_value_heads: must divide num_attention_heads \(4\)",
    ),
    Case(
        "heads-do-not-divide-width",
        _model_case({"llm": {"config": {**_LLAMA, "hidden_size": 66}}}),
        ConfigError,
        r"model\.llm\.config\.num_attention_heads: must divide hidden_size",
    ),
    Case(
        "llm-vocab-0",
        _model_case({"llm": {"config": {**_LLAMA, "vocab_size": 0}}}),
        ConfigError,
        r"model\.llm\.config\.vocab_size",
    ),
    Case(
        "encoder-override-layers-0",
        _model_case({"strong": {"overrides": {"encoder_layers": 0}}}),
        ConfigError,
        r"model\.strong\.overrides\.encoder_layers",
    ),
    Case(
        "encoder-heads-do-not-divide",
        _model_case({"strong": {"overrides": {"d_model": 64, "encoder_attention_heads": 3}}}),
        ConfigError,
        r"model\.strong\.overrides\.encoder_attention_heads: must divide d_model",
    ),
    Case(
        "encoder-max-below-min",
        _model_case({"strong": {"min_seconds": 2.0, "max_seconds": 1.0}}),
        ConfigError,
        r"model\.strong\.max_seconds",
    ),
    Case(
        "connector-stack-0",
        _model_case({"connector": {"kind": "stack", "options": {"stack": 0}}}),
        ConfigError,
        r"model\.connector\.options\.stack",
    ),
    Case("audio-token-negative", _model_case({"audio_token_id": -1}), ConfigError, r"model\.audio_token_id"),
    Case("lr-1e38", _stage_case(lr=1e38), ConfigError, r"lr.*\(0, 10\]"),
    Case("lr-inf", _stage_case(lr=float("inf")), ConfigError, r"lr"),
    Case("adam-eps-0", _train_case(adam_eps=0.0), ConfigError, r"train\.adam_eps"),
    Case("adam-beta-1", _train_case(adam_betas=[0.9, 1.0]), ConfigError, r"train\.adam_betas"),
    Case("max-grad-norm-inf", _train_case(max_grad_norm=float("inf")), ConfigError, r"train\.max_grad_norm"),
    Case(
        "skip-budget-2",
        _train_case(max_nonfinite_fraction=2.0),
        ConfigError,
        r"train\.max_nonfinite_fraction",
    ),
    Case("run-file-lora-r-0", _run_case("model.lora.r", 0), ConfigError, r"run\.yaml: model\.lora\.r"),
    Case(
        "run-file-max-audio-negative",
        _run_case("data.max_audio_seconds", -1.0),
        ConfigError,
        r"run\.yaml: data\.max_audio_seconds",
    ),
    Case(
        "run-file-bpe-vocab-0",
        _run_case("tokenizer.train_bpe.vocab_size", 0),
        ConfigError,
        r"tokenizer\.train_bpe\.vocab_size",
    ),
    Case("run-file-processor-seed", _run_case("processor", {"seed": -3}), ConfigError, r"processor\.seed"),
    Case("output-dir-is-a-file", _output_dir_is_file, ConfigError, r"train\.output_dir.*taken"),
    Case("output-dir-under-a-file", _output_dir_under_file, ConfigError, r"train\.output_dir.*taken"),
]


# ================================================================================ 4. paths, file names
def _missing_llm_folder(tmp):
    from mowe.builders import build_llm

    build_llm(LLMConfig(name_or_path=str(tmp / "models" / "llm")), LoRAConfig())


def _missing_llm_dot(tmp):
    from mowe.builders import build_llm

    build_llm(LLMConfig(name_or_path="./no-such-llm-folder"), LoRAConfig())


def _missing_encoder_folder(tmp):
    from mowe.builders import build_encoder
    from mowe.config import EncoderConfig

    build_encoder(EncoderConfig("whisper", name_or_path="~/no-such-whisper"), name="strong")


def _manifest_with_bom(tmp):
    ds = ManifestDataset(_manifest(tmp, prefix=b"\xef\xbb\xbf"))
    assert len(ds) == 2 and ds.ids == ["x0", "x1"]


def _config_with_bom(tmp):
    p = tmp / "c.json"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}')
    assert read_config_file(p) == {"a": 1}


def _non_utf8_name_bytes(tmp):
    name = os.fsencode(tmp) + b"/caf\xe9.wav"
    _wav(name)
    assert load_audio(name).num_samples == 4800


def _non_utf8_name_str(tmp):
    name = os.fsencode(tmp) + b"/\xff\xfe.wav"
    _wav(name)
    assert load_audio(os.fsdecode(name)).num_samples == 4800  # surrogate-escaped str


def _non_utf8_name_in_manifest(tmp):
    ds = ManifestDataset(_manifest(tmp, names=(os.fsdecode(b"\xe9t\xe9.wav"), "b.wav")))
    assert ds[0]["audio"].shape[0] == 4800


def _fifo_with_writer(tmp):
    p = _fifo(tmp, "run.yaml")
    text = _run_file(tmp, name="real.yaml").read_text()
    t = threading.Thread(target=lambda: Path(p).write_text(text))
    t.start()
    run = load_run_file(p)
    t.join()
    assert run["train"]["batch_size"] == 4


def _small_alias_is_fine(tmp):
    p = tmp / "ok.yaml"
    p.write_text("a: &x {k: [1, 2]}\nb: *x\n")
    assert read_config_file(p) == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}


def _pickled_bin_refused(tmp):
    from mowe.hub import load_prefixed_state_dict

    d = tmp / "legacy"
    d.mkdir()
    torch.save({"encoder.w": argparse.Namespace()}, d / "pytorch_model.bin")
    try:
        load_prefixed_state_dict(str(d), ("encoder.",))
    except CheckpointError as e:
        assert "\x1b[" not in str(e)
        raise


def _pickled_transformers_folder(tmp, model) -> str:
    """``model`` saved as a legacy ``pytorch_model.bin`` holding a non-tensor object (no safetensors file)."""
    d = tmp / "legacy-model"
    model.save_pretrained(d)
    (d / "model.safetensors").unlink()
    torch.save({**model.state_dict(), "extra": argparse.Namespace()}, d / "pytorch_model.bin")
    return str(d)


def _pickled_llm_refused(tmp):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mowe.builders import build_llm

    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    build_llm(LLMConfig(name_or_path=_pickled_transformers_folder(tmp, llm)), LoRAConfig())


def _pickled_hubert_refused(tmp):
    from transformers import HubertConfig, HubertModel

    from mowe.encoders.hubert import HubertEncoder

    cfg = HubertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    HubertEncoder.from_pretrained(_pickled_transformers_folder(tmp, HubertModel(cfg)))


_REFUSED = (
    r"legacy-model/pytorch_model\.bin: the {}'s pickle weight file was refused by torch\.load\(weights_only"
    r"=True\).*GLOBAL argparse\.Namespace"
)
API_CASES += [
    Case("weights-only-refusal-llm", _pickled_llm_refused, CheckpointError, _REFUSED.format("LLM")),
    Case(
        "weights-only-refusal-hubert",
        _pickled_hubert_refused,
        CheckpointError,
        _REFUSED.format("hubert encoder"),
    ),
    Case(
        "weights-only-refusal-bin",
        _pickled_bin_refused,
        CheckpointError,
        r"pytorch_model\.bin: not a loadable",
    ),
    Case(
        "missing-llm-folder",
        _missing_llm_folder,
        CheckpointError,
        r"llm\.name_or_path.*models/llm.*does not exist",
    ),
    Case("missing-llm-dot-path", _missing_llm_dot, CheckpointError, r"\./no-such-llm-folder.*does not exist"),
    Case(
        "missing-encoder-folder",
        _missing_encoder_folder,
        CheckpointError,
        r"model\.strong\.name_or_path: .*~/no-such-whisper",
    ),
]
OK_CASES = [
    _manifest_with_bom,
    _config_with_bom,
    _non_utf8_name_bytes,
    _non_utf8_name_str,
    _non_utf8_name_in_manifest,
    _fifo_with_writer,
    _small_alias_is_fine,
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.name)
def test_api_case(tmp_path, case: Case):
    with pytest.raises(case.error, match=case.match):
        case.run(tmp_path)


@pytest.mark.parametrize("check", OK_CASES, ids=lambda f: f.__name__.strip("_"))
def test_accepted_input(tmp_path, check):
    check(tmp_path)


# ================================================================================ 5. the CLI, in-process
@dataclass
class CliCase:
    name: str
    argv: Callable[[Path], list[str]]
    code: int
    match: str


def _train_argv(edit=None, *extra) -> Callable[[Path], list[str]]:
    def argv(tmp):
        _manifest(tmp)
        return ["train", "--config", str(_run_file(tmp, edit)), *extra]

    return argv


def _infer(*flags) -> Callable[[Path], list[str]]:
    return lambda tmp: ["infer", "--model", str(tmp), "--audio", "x.wav", "--prompt", "p", *flags]


def _data_train_fifo(tmp):
    return [
        "train",
        "--config",
        str(_run_file(tmp, lambda r: r["data"].update(train=str(_fifo(tmp, "t.jsonl"))))),
    ]


def _out_is_file(run):
    Path(run["data"]["train"]).parent.joinpath("out").write_text("a file")


CLI_CASES = [
    CliCase(
        "run-file-fifo", lambda tmp: ["train", "--config", str(_fifo(tmp, "run.yaml"))], 2, r"run\.yaml.*FIFO"
    ),
    CliCase("data-train-fifo", _data_train_fifo, 3, r"t\.jsonl.*FIFO"),
    CliCase("run-file-missing", lambda tmp: ["train", "--config", str(tmp / "nope.yaml")], 2, r"nope\.yaml"),
    CliCase("seed-2**70", _train_argv(None, "--set", f"train.seed={2**70}"), 2, r"train\.seed.*4294967295"),
    CliCase("lora-r-0", _train_argv(None, "--set", "model.lora.r=0"), 2, r"model\.lora\.r"),
    CliCase("lr-1e38", _train_argv(lambda r: r["stages"][0].update(lr=1e38)), 2, r"lr.*\(0, 10\]"),
    CliCase(
        "alias-bomb-set", _train_argv(None, "--set", "model.connector.options=" + _FLOW_BOMB), 2, r"alias"
    ),
    CliCase("output-dir-file", _train_argv(_out_is_file), 2, r"train\.output_dir"),
    CliCase(
        "missing-tokenizer-folder",
        _train_argv(lambda r: r.update(tokenizer="./no-such-tokenizer")),
        4,
        r"tokenizer.*no-such-tokenizer.*does not exist",
    ),
    CliCase("max-new-tokens-negative", _infer("--max-new-tokens", "-1"), 2, r"--max-new-tokens: must be"),
    CliCase("max-new-tokens-0", _infer("--max-new-tokens", "0"), 2, r"--max-new-tokens"),
    CliCase("num-beams-0", _infer("--num-beams", "0"), 2, r"--num-beams: must be an integer >= 1, got 0"),
    CliCase("lora-scale-nan", _infer("--lora-scale", "nan"), 2, r"--lora-scale"),
    CliCase(
        "eval-batch-size-0",
        lambda tmp: ["eval", "--model", str(tmp), "--manifest", "m.jsonl", "--batch-size", "0"],
        2,
        r"--batch-size: must be",
    ),
    CliCase("infer-no-model", _infer(), 4, r"no saved model"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.name)
def test_cli_case(tmp_path, capsys, case: CliCase):
    code, err = _cli(case.argv(tmp_path), capsys)
    assert code == case.code, err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    import re

    assert re.search(case.match, err), err


# ================================================================================ 6. failures -> exit codes
def _ansi_unpickling():
    raise pickle.UnpicklingError(
        "\x1b[1mWeights only load failed.\x1b[0m Unsupported global: GLOBAL os.system"
    )


MAPPING = [
    ("non-finite", _raise(NonFiniteLossError("non-finite loss at step 3")), 6, r"step 3"),
    ("interrupt", _raise(KeyboardInterrupt()), 130, r"interrupted"),
    ("unpickling-ansi", _ansi_unpickling, 4, r"weights_only.*Weights only load failed\. Unsupported global"),
    (
        "enospc",
        _raise(OSError(errno.ENOSPC, "No space left on device", "/o/model.safetensors")),
        5,
        r"no space left.*'/o/model\.safetensors'",
    ),
    ("erofs", _raise(OSError(errno.EROFS, "Read-only file system", "/ro/x")), 5, r"'/ro/x'.*read-only"),
    (
        "eacces",
        _raise(PermissionError(errno.EACCES, "Permission denied", "/p/log.jsonl")),
        5,
        r"permission denied: '/p/log\.jsonl'",
    ),
    ("file-in-the-way", _raise(FileExistsError(errno.EEXIST, "File exists", "/o/run")), 5, r"'/o/run'.*file"),
    (
        "checkpoint",
        _raise(CheckpointError("/c/trainer_state.json: key 'seed' is missing")),
        4,
        r"trainer_state",
    ),
    ("manifest", _raise(ManifestError("m.jsonl, line 3: malformed JSON")), 3, r"m\.jsonl, line 3"),
    ("internal", _raise(RuntimeError("boom")), 1, r"internal error: RuntimeError: boom.*--debug"),
]


@pytest.mark.parametrize(("name", "fn", "code", "match"), MAPPING, ids=[m[0] for m in MAPPING])
def test_failure_maps_to_one_line_and_exit_code(capsys, name, fn, code, match):
    assert run_command("train", fn) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mowe train: error: "), err
    assert "Traceback" not in err and "\x1b[" not in err
    import re

    assert re.search(match, err), err


def test_debug_flag_adds_the_traceback(capsys, tmp_path):
    code = main(["train", "--debug", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("mowe train: error:")
    assert describe(ConfigError("x"))[0] == 2


def test_debug_flag_works_after_a_nested_subcommand(capsys, tmp_path):
    """``mowe corpus build --debug`` (a subcommand of a subcommand) takes the flag too."""
    bad = tmp_path / "file"
    bad.write_text("x")
    code = main(["corpus", "build", "--out", str(bad / "sub"), "--size", "8", "--debug"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" in err and "unrecognized arguments" not in err
