"""The bad-input zoo: every class of bad input gets a named error, a documented exit code, and nothing hangs.

Each case states the error type it expects and the file, key or flag the message must name. Every case runs
under a per-case alarm (``CASE_TIMEOUT``: a hang fails the case instead of blocking CI), CLI cases run
``mowe.cli.main`` in-process and check stderr has one ``mowe <command>: error:`` line and no traceback, and the
cases about hangs and tracebacks also run the real ``python -m mowe`` in a subprocess with a timeout.
Classes: special files, YAML alias bombs, values out of range, CLI flags, paths, full / read-only disks, the
CLI's mapping of failures, resumes, file names, silent partial success.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from _trainer_helpers import SyntheticDataset, collate, tiny_model

from mowe.cli import load_run_file, main
from mowe.cli_errors import describe, run_command
from mowe.config import LLMConfig, LoRAConfig, MoWEConfig, from_dict, parse_value, read_config_file
from mowe.data.audio import load_audio
from mowe.data.manifest import ManifestDataset
from mowe.errors import AudioLoadError, CheckpointError, ConfigError, ManifestError
from mowe.training.config import NonFiniteLossError, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
RUN_TINY = ROOT / "examples" / "run_tiny.yaml"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MOWE_FIFO_TIMEOUT="1",
           PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
CASE_TIMEOUT = 60  # seconds per case; the FIFO waits are 0.3 s here


@pytest.fixture(autouse=True)
def _per_case_timeout(monkeypatch):
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
        lines.append(json.dumps({"id": f"x{i}", "audio": n, "instruction": "What is it?", "answer": "a tone",
                                 "task": "asr"}))
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
_FLOW_BOMB = "{" + ", ".join(ln.replace(": ", ": ", 1) for ln in _bomb().splitlines()) + "}"

API_CASES += [
    Case("alias-bomb-connector-options", _yaml_case(_OPTIONS_BOMB), ConfigError, r"bomb\.yaml.*alias"),
    Case("alias-bomb-paraphrases", _yaml_case(_PARAPHRASE_BOMB), ConfigError, r"bomb\.yaml.*alias"),
    Case("alias-bomb-json-suffix-as-yaml", _yaml_case("a: " + _FLOW_BOMB), ConfigError, r"alias"),
    Case("alias-bomb-via-set", _set_case("model.connector.options=" + _FLOW_BOMB), ConfigError,
         r"--set model\.connector\.options.*alias"),
    Case("alias-bomb-via-set-paraphrases", _set_case("processor.paraphrases=" + _FLOW_BOMB), ConfigError,
         r"--set processor\.paraphrases.*alias"),
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
    from mowe.training.stages import stages_from_list

    return lambda tmp: stages_from_list([{"name": "s", "train": ["connector"], "steps": 2, "lr": 1e-3, **kw}])


def _output_dir_is_file(tmp):
    (tmp / "taken").write_text("x")
    TrainConfig(output_dir=str(tmp / "taken"))


def _output_dir_under_file(tmp):
    (tmp / "taken").write_text("x")
    TrainConfig(output_dir=str(tmp / "taken" / "run"))


_LLAMA = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
API_CASES += [
    Case("seed-2**70", _train_case(seed=2**70), ConfigError, r"train\.seed.*\[0, 4294967295\]"),
    Case("seed-negative", _train_case(seed=-1), ConfigError, r"train\.seed"),
    Case("lora-r-0", _model_case({"lora": {"r": 0}}), ConfigError, r"model\.lora\.r: must be an integer >= 1"),
    Case("lora-dropout-1.5", _model_case({"lora": {"dropout": 1.5}}), ConfigError, r"model\.lora\.dropout.*\[0, 1\)"),
    Case("lora-alpha-0", _model_case({"lora": {"alpha": 0}}), ConfigError, r"model\.lora\.alpha"),
    Case("router-hidden-negative", _model_case({"router": {"hidden_dim": -4}}), ConfigError,
         r"model\.router\.hidden_dim: must be an integer >= 1"),
    Case("router-top-k-0", _model_case({"router": {"top_k": 0}}), ConfigError, r"model\.router\.top_k"),
    Case("router-aux-weight-negative", _model_case({"router": {"aux_loss_weight": -1.0}}), ConfigError,
         r"model\.router\.aux_loss_weight"),
    Case("router-noise-nan", _model_case({"router": {"noise_std": float("nan")}}), ConfigError,
         r"model\.router\.noise_std.*finite"),
    Case("kv-heads-do-not-divide", _model_case({"llm": {"config": {**_LLAMA, "num_key_value_heads": 3}}}),
         ConfigError, r"model\.llm\.config\.num_key_value_heads: must divide num_attention_heads \(4\)"),
    Case("heads-do-not-divide-width", _model_case({"llm": {"config": {**_LLAMA, "hidden_size": 66}}}), ConfigError,
         r"model\.llm\.config\.num_attention_heads: must divide hidden_size"),
    Case("llm-vocab-0", _model_case({"llm": {"config": {**_LLAMA, "vocab_size": 0}}}), ConfigError,
         r"model\.llm\.config\.vocab_size"),
    Case("encoder-override-layers-0", _model_case({"strong": {"overrides": {"encoder_layers": 0}}}), ConfigError,
         r"model\.strong\.overrides\.encoder_layers"),
    Case("encoder-heads-do-not-divide", _model_case({"strong": {"overrides": {"d_model": 64,
                                                                               "encoder_attention_heads": 3}}}),
         ConfigError, r"model\.strong\.overrides\.encoder_attention_heads: must divide d_model"),
    Case("encoder-max-below-min", _model_case({"strong": {"min_seconds": 2.0, "max_seconds": 1.0}}), ConfigError,
         r"model\.strong\.max_seconds"),
    Case("connector-stack-0", _model_case({"connector": {"kind": "stack", "options": {"stack": 0}}}), ConfigError,
         r"model\.connector\.options\.stack"),
    Case("audio-token-negative", _model_case({"audio_token_id": -1}), ConfigError, r"model\.audio_token_id"),
    Case("lr-1e38", _stage_case(lr=1e38), ConfigError, r"lr.*\(0, 10\]"),
    Case("lr-inf", _stage_case(lr=float("inf")), ConfigError, r"lr"),
    Case("adam-eps-0", _train_case(adam_eps=0.0), ConfigError, r"train\.adam_eps"),
    Case("adam-beta-1", _train_case(adam_betas=[0.9, 1.0]), ConfigError, r"train\.adam_betas"),
    Case("max-grad-norm-inf", _train_case(max_grad_norm=float("inf")), ConfigError, r"train\.max_grad_norm"),
    Case("skip-budget-2", _train_case(max_nonfinite_fraction=2.0), ConfigError, r"train\.max_nonfinite_fraction"),
    Case("run-file-lora-r-0", _run_case("model.lora.r", 0), ConfigError, r"run\.yaml: model\.lora\.r"),
    Case("run-file-max-audio-negative", _run_case("data.max_audio_seconds", -1.0), ConfigError,
         r"run\.yaml: data\.max_audio_seconds"),
    Case("run-file-bpe-vocab-0", _run_case("tokenizer.train_bpe.vocab_size", 0), ConfigError,
         r"tokenizer\.train_bpe\.vocab_size"),
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


API_CASES += [
    Case("weights-only-refusal-bin", _pickled_bin_refused, CheckpointError, r"pytorch_model\.bin: not a loadable"),
    Case("missing-llm-folder", _missing_llm_folder, CheckpointError, r"llm\.name_or_path.*models/llm.*does not exist"),
    Case("missing-llm-dot-path", _missing_llm_dot, CheckpointError, r"\./no-such-llm-folder.*does not exist"),
    Case("missing-encoder-folder", _missing_encoder_folder, CheckpointError, r"'strong'.*~/no-such-whisper"),
]
OK_CASES = [_manifest_with_bom, _config_with_bom, _non_utf8_name_bytes, _non_utf8_name_str,
            _non_utf8_name_in_manifest, _fifo_with_writer, _small_alias_is_fine]


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
    return ["train", "--config", str(_run_file(tmp, lambda r: r["data"].update(train=str(_fifo(tmp, "t.jsonl")))))]


def _out_is_file(run):
    Path(run["data"]["train"]).parent.joinpath("out").write_text("a file")


CLI_CASES = [
    CliCase("run-file-fifo", lambda tmp: ["train", "--config", str(_fifo(tmp, "run.yaml"))], 2, r"run\.yaml.*FIFO"),
    CliCase("data-train-fifo", _data_train_fifo, 3, r"t\.jsonl.*FIFO"),
    CliCase("run-file-missing", lambda tmp: ["train", "--config", str(tmp / "nope.yaml")], 2, r"nope\.yaml"),
    CliCase("seed-2**70", _train_argv(None, "--set", f"train.seed={2**70}"), 2, r"train\.seed.*4294967295"),
    CliCase("lora-r-0", _train_argv(None, "--set", "model.lora.r=0"), 2, r"model\.lora\.r"),
    CliCase("lr-1e38", _train_argv(lambda r: r["stages"][0].update(lr=1e38)), 2, r"lr.*\(0, 10\]"),
    CliCase("alias-bomb-set", _train_argv(None, "--set", "model.connector.options=" + _FLOW_BOMB), 2, r"alias"),
    CliCase("output-dir-file", _train_argv(_out_is_file), 2, r"train\.output_dir"),
    CliCase("missing-tokenizer-folder", _train_argv(lambda r: r.update(tokenizer="./no-such-tokenizer")), 4,
            r"tokenizer.*no-such-tokenizer.*does not exist"),
    CliCase("max-new-tokens-negative", _infer("--max-new-tokens", "-1"), 2, r"--max-new-tokens: must be"),
    CliCase("max-new-tokens-0", _infer("--max-new-tokens", "0"), 2, r"--max-new-tokens"),
    CliCase("num-beams-0", _infer("--num-beams", "0"), 2, r"--num-beams: must be an integer >= 1, got 0"),
    CliCase("lora-scale-nan", _infer("--lora-scale", "nan"), 2, r"--lora-scale"),
    CliCase("eval-batch-size-0", lambda tmp: ["eval", "--model", str(tmp), "--manifest", "m.jsonl",
                                              "--batch-size", "0"], 2, r"--batch-size: must be"),
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
    raise pickle.UnpicklingError("\x1b[1mWeights only load failed.\x1b[0m Unsupported global: GLOBAL os.system")


def _raise(exc: BaseException) -> Callable[[], None]:
    def f():
        raise exc
    return f


MAPPING = [
    ("non-finite", _raise(NonFiniteLossError("non-finite loss at step 3")), 6, r"step 3"),
    ("interrupt", _raise(KeyboardInterrupt()), 130, r"interrupted"),
    ("unpickling-ansi", _ansi_unpickling, 4, r"weights_only.*Weights only load failed\. Unsupported global"),
    ("enospc", _raise(OSError(errno.ENOSPC, "No space left on device", "/o/model.safetensors")), 5,
     r"no space left.*'/o/model\.safetensors'"),
    ("erofs", _raise(OSError(errno.EROFS, "Read-only file system", "/ro/x")), 5, r"'/ro/x'.*read-only"),
    ("eacces", _raise(PermissionError(errno.EACCES, "Permission denied", "/p/log.jsonl")), 5,
     r"permission denied: '/p/log\.jsonl'"),
    ("file-in-the-way", _raise(FileExistsError(errno.EEXIST, "File exists", "/o/run")), 5, r"'/o/run'.*file"),
    ("checkpoint", _raise(CheckpointError("/c/trainer_state.json: key 'seed' is missing")), 4, r"trainer_state"),
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


# ================================================================================ 7. full / read-only disks
def _tiny_saved_model():
    from mowe import MoWEAudioLLM
    from mowe.config import EncoderConfig

    cfg = MoWEConfig(strong=EncoderConfig("whisper", preset="tiny", pad_to_30s=False,
                                          overrides={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 64}),
                     llm=LLMConfig(config={**_LLAMA, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 64,
                                           "num_hidden_layers": 1, "max_position_embeddings": 64}))
    return MoWEAudioLLM.from_config(cfg)


@pytest.fixture
def tiny_mount(tmp_path):
    """A 256 KiB tmpfs (needs root; CI containers that refuse mount skip the cases that need it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the full-disk case needs a real small file system")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_names_the_file_and_keeps_the_previous_save(tiny_mount, capsys):
    model = _tiny_saved_model()
    prev = tiny_mount / "final"
    prev.mkdir()
    (prev / "config.json").write_text('{"old": true}')
    with pytest.raises(OSError) as ei:
        model.save_pretrained(prev)
    assert ei.value.errno == errno.ENOSPC and str(prev / "model.safetensors") in str(ei.value.filename)
    assert (prev / "config.json").read_text() == '{"old": true}'  # the previous save is as it was
    assert sorted(os.listdir(tiny_mount)) == ["final"]  # no temp folder left behind
    assert run_command("train", _raise(ei.value)) == 5
    assert "no space left on the device while writing" in capsys.readouterr().err


def test_read_only_folder_names_the_path(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True,
                      check=False).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (not root; root ignores chmod)")
    try:
        with pytest.raises(OSError) as ei:
            _tiny_saved_model().save_pretrained(ro / "final")
        assert ei.value.errno == errno.EROFS and str(ro) in str(ei.value.filename)
        assert run_command("train", _raise(ei.value)) == 5
        assert "read-only" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def _fake_accelerator():
    return SimpleNamespace(is_main_process=True, process_index=0, wait_for_everyone=lambda: None)


@pytest.mark.parametrize("failure", ["safetensors", "torch-save"])
def test_checkpoint_disk_full_names_the_file_and_keeps_latest(tmp_path, monkeypatch, failure):
    import mowe.training.checkpoint as ck

    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    kw = {"accelerator": _fake_accelerator(), "checkpoint_dir": str(tmp_path), "state": {"global_step": 2},
          "model": model, "keys": ["weight", "bias"], "optimizer": opt, "scheduler": sched, "keep_last": 2}
    ck.write_checkpoint(name="step-2", **kw)
    if failure == "safetensors":  # what safetensors says on a full disk: no file named
        def full(tensors, path):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(ck, "_save_safetensors", full)
    else:  # Python's write: an OSError without a filename
        def full(obj, path):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(ck, "_save_torch", full)
    with pytest.raises(OSError) as ei:
        ck.write_checkpoint(name="step-4", **{**kw, "state": {"global_step": 4}})
    assert ei.value.errno == errno.ENOSPC and ".tmp-step-4" in ei.value.filename
    assert sorted(os.listdir(tmp_path)) == ["latest", "step-2"]
    assert (tmp_path / "latest").read_text().strip() == "step-2"


# ================================================================================ 8. resumes
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 2-stage run with a checkpoint after every step (stage a: steps 1-2, stage b: steps 3-4)."""
    from mowe.training.stages import Stage
    from mowe.training.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    stages = [Stage("a", ("connector",), 2, 1e-3), Stage("b", ("connector", "lora"), 2, 1e-3)]
    Trainer(tiny_model(weak=0), SyntheticDataset(8), stages=stages, collate_fn=collate,
            config=TrainConfig(output_dir=str(out), batch_size=2, save_every=1, keep_last_checkpoints=10,
                               progress=False, save_final=False)).train()
    return out, stages


def _resume_from(run_dir, tmp, damage: Callable[[Path, Path], None]):
    from mowe.training.trainer import Trainer

    out, stages = run_dir
    ck = tmp / "step-3"
    shutil.copytree(out / "checkpoints" / "step-3", ck)
    damage(ck, out / "checkpoints")
    model = tiny_model(seed=5, weak=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, SyntheticDataset(8), stages=stages, collate_fn=collate,
                      config=TrainConfig(output_dir=str(tmp / "new"), batch_size=2, progress=False, save_final=False))
    try:
        trainer.train(resume=str(ck))
    except CheckpointError:  # whatever failed, it failed before touching the model
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        raise
    return trainer


def _state_edit(fn) -> Callable[[Path, Path], None]:
    def damage(ck, _):
        p = ck / "trainer_state.json"
        s = json.loads(p.read_text())
        fn(s)
        p.write_text(json.dumps(s))
    return damage


RESUME_CASES = [
    ("trainer-state-not-json", lambda ck, _: (ck / "trainer_state.json").write_text("{\"global_st"),
     r"trainer_state\.json: unreadable"),
    ("trainer-state-key-missing", _state_edit(lambda s: s.pop("global_step")), r"trainer_state\.json.*'global_step'"),
    ("trainer-state-bad-type", _state_edit(lambda s: s.update(step_in_stage="1")),
     r"trainer_state\.json.*'step_in_stage' must be an integer"),
    ("trainer-state-not-object", lambda ck, _: (ck / "trainer_state.json").write_text("[1]"),
     r"trainer_state\.json: expected a JSON object"),
    ("trainer-state-wrong-stage-name", _state_edit(lambda s: s.update(stage_name="z")), r"stage 'z'.*'b'"),
    ("optimizer-from-another-stage", lambda ck, root: shutil.copy(root / "step-1" / "optimizer.pt",
                                                                  ck / "optimizer.pt"),
     r"optimizer\.pt: the optimizer state does not fit stage 'b'"),
    ("optimizer-weights-only-refusal", lambda ck, _: torch.save({"x": argparse.Namespace()}, ck / "optimizer.pt"),
     r"optimizer\.pt: unreadable"),
    ("weights-truncated", lambda ck, _: (ck / "model.safetensors").write_bytes(b"\x08"), r"model\.safetensors"),
]


@pytest.mark.parametrize(("name", "damage", "match"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_is_checked_before_anything_is_touched(run_dir, tmp_path, name, damage, match):
    with pytest.raises(CheckpointError, match=match) as ei:
        _resume_from(run_dir, tmp_path, damage)
    assert "\x1b[" not in str(ei.value)


def test_intact_checkpoint_still_resumes(run_dir, tmp_path):
    assert _resume_from(run_dir, tmp_path, lambda ck, root: None).global_step == 4


# ================================================================================ 9. silent partial success
def _nan_at(model, calls: set[int]):
    forward, n = model.forward, {"i": 0}

    def patched(**kw):
        out = forward(**kw)
        n["i"] += 1
        if n["i"] in calls:
            out.loss = out.loss * float("nan")
        return out

    model.forward = patched


def _train_with_nans(tmp, calls: set[int], steps: int):
    from mowe.training.stages import Stage
    from mowe.training.trainer import Trainer

    model = tiny_model(weak=0)
    _nan_at(model, calls)
    return Trainer(model, SyntheticDataset(8), stages=[Stage("s", ("connector",), steps, 1e-3)], collate_fn=collate,
                   config=TrainConfig(output_dir=str(tmp), batch_size=2, progress=False, save_final=False)).train()


def test_skipping_most_steps_fails_the_run(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"4 of the run's 6 steps skipped.*max_nonfinite_fraction=0\.5"):
        _train_with_nans(tmp_path, {2, 3, 4, 5, 6}, 6)
    assert run_command("train", _raise(NonFiniteLossError("x"))) == 6


def test_a_run_that_skipped_steps_says_so(tmp_path, capsys):
    assert _train_with_nans(tmp_path, {2}, 3).skipped_nonfinite == 1
    assert "1 of 3 training steps were skipped" in capsys.readouterr().err


def test_parse_value_alias_budget_is_fast():
    with pytest.raises(ConfigError, match="alias"):
        parse_value(_FLOW_BOMB)


# ================================================================================ 10. real CLI subprocesses
def _mowe(args: list[str], *, shell: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = ["bash", "-c", shell] if shell else [sys.executable, "-m", "mowe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, check=False)


def test_subprocess_fifo_without_writer_does_not_hang(tmp_path):
    res = _mowe(["train", "--config", str(_fifo(tmp_path, "run.yaml"))], timeout=60)
    assert res.returncode == 2 and "FIFO" in res.stderr and "run.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_subprocess_process_substitution_and_alias_bomb(tmp_path):
    """``--config <(cat run.yaml)`` is read (it fails later, at the missing manifest it names: exit 3), and an
    alias bomb through --set is refused at once (exit 2); neither prints a traceback."""
    run = _run_file(tmp_path)
    py = sys.executable
    res = _mowe([], shell=f"{py} -m mowe train --config <(cat '{run}'); echo \"rc=$?\" >&2; "
                          f"{py} -m mowe train --config '{run}' --set 'model.connector.options={_FLOW_BOMB}'; "
                          f"echo \"rc=$?\" >&2")
    err = res.stderr
    assert "Traceback" not in err, err
    first, second = err.split("rc=")[0], err.split("rc=")[1]
    assert "train.jsonl" in first and err.count("rc=3") == 1, err
    assert "alias" in second and "rc=2" in err, err
