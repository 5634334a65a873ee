"""Components by import path: the loader's folding of keyword arguments, resolution errors, the allowance,
what mowe passes to a component's constructor, and the save / reload round trip."""

from __future__ import annotations

import pytest
import torch
from _audio_helpers import write_tone_wav
from _component_helpers import PACKAGE, write_package
from _trainer_helpers import tiny_config

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.components import instantiate, is_allowed, resolve
from mowe.config import ConnectorConfig, EncoderConfig, RouterConfig, from_dict
from mowe.errors import ConfigError, MoWEInputError


@pytest.fixture
def my_parts(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(write_package(tmp_path / "pkgs"))
    yield PACKAGE


def test_extra_keys_fold_into_kwargs_only_for_components_and_round_trip():
    cfg = from_dict(
        MoWEConfig,
        {
            "weak_encoders": {"c": {"component": "a.B", "width": 3, "freeze": False}},
            "router": {"component": "a.R", "top_k": 2, "buckets": 4},
            "connector": {"component": "a.C", "kwargs": {"stride": 2}, "depth": 1},
        },
    )
    assert cfg.weak_encoders["c"] == EncoderConfig(component="a.B", kwargs={"width": 3}, freeze=False)
    assert cfg.router == RouterConfig(component="a.R", kwargs={"buckets": 4}, top_k=2)
    assert cfg.connector.kwargs == {"stride": 2, "depth": 1}
    assert MoWEConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match=r"^model\.weak_encoders\.c\.width: unknown key 'width'"):
        from_dict(MoWEConfig, {"weak_encoders": {"c": {"family": "whisper", "width": 3}}}, where="model")
    with pytest.raises(ConfigError, match=r"^model\.router\.top_k: expected int"):
        from_dict(MoWEConfig, {"router": {"component": "a.R", "top_k": "two"}}, where="model")
    with pytest.raises(ConfigError, match=r"^model\.router\.n: given both as a key and in 'kwargs'"):
        from_dict(MoWEConfig, {"router": {"component": "a.R", "n": 1, "kwargs": {"n": 2}}}, where="model")


def test_resolution_errors_name_the_key_path_and_the_component(my_parts):
    assert resolve(f"{my_parts}.Conv", where="x").__name__ == "Conv"
    assert resolve("mowe.routers.MixtureRouter", where="x").__name__ == "MixtureRouter"
    cases = {
        "no_such_pkg.X": r"router: component 'no_such_pkg\.X': no module 'no_such_pkg'",
        f"{my_parts}.Nope": r"router: component 'my_parts\.Nope': 'my_parts' has no attribute 'Nope'",
        f"{my_parts}.torch.pi": r"router: component 'my_parts\.torch\.pi' is a float, not a class",
        "my parts.X": r"router: component 'my parts\.X' is not an import path",
        "Conv": r"router: component 'Conv' needs a module and a name",
    }
    for path, pattern in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            instantiate(path, {}, where="router")
    with pytest.raises(
        ConfigError,
        match=r"weak\.c: component 'my_parts\.Conv' rejected the arguments "
        r"\['out_dim', 'width'\]",
    ):
        instantiate(f"{my_parts}.Conv", {"width": 3, "out_dim": 4}, where="weak.c")


def test_infer_eval_and_serve_take_allow_components():
    from mowe.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        [
            "eval",
            "--model",
            "m",
            "--manifest",
            "t.jsonl",
            "--allow-components",
            "a",
            "--allow-components",
            "b",
        ]
    )
    assert args.allow_components == ["a", "b"]
    assert (
        parser.parse_args(["infer", "--model", "m", "--audio", "x.wav", "--prompt", "p"]).allow_components
        is None
    )
    assert parser.parse_args(["serve", "m", "--allow-components", "c"]).allow_components == ["c"]


def test_allowance_rules():
    assert is_allowed("mowe.routers.MixtureRouter", None)
    assert is_allowed("my_pkg.sub.X", ["my_pkg"]) and is_allowed("my_pkg.X", "my_pkg")
    assert not is_allowed("my_pkgX.Y", ["my_pkg"]) and not is_allowed("other.Y", ["my_pkg"])
    assert not is_allowed("my_pkg.X", None) and is_allowed("anything.X", True)
    with pytest.raises(
        ConfigError,
        match=r"router: component 'evil\.Router' is outside mowe.*"
        r"allow_components=\['evil'\].*--allow-components evil",
    ):
        instantiate("evil.Router", {}, where="router", allow=["mine"])


def test_mowe_passes_only_the_arguments_a_constructor_names(my_parts):
    cfg = tiny_config(weak=2, top_k=1)
    cfg = cfg.replace(
        weak_encoders={
            **cfg.weak_encoders,
            "c": EncoderConfig(component=f"{my_parts}.Conv", kwargs={"out_dim": 4}),
        },
        router=RouterConfig(component=f"{my_parts}.DurationRouter", top_k=2, kwargs={"buckets": 2}),
        connector=ConnectorConfig(component="mowe.connectors.basic.LinearConnector"),
    )
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg)
    assert (model.router.num_encoders, model.router.top_k, model.router.buckets) == (3, 2, 2)
    enc = model.weak_encoders.encoders["c"]
    assert enc.out_dim == 4 and not any(p.requires_grad for p in enc.parameters())  # freeze: true by default
    d_llm = model.llm.get_input_embeddings().embedding_dim
    assert (model.connector.in_dim, model.connector.out_dim) == (64 + 32 + 32 + 4, d_llm)
    assert type(model.connector).__name__ == "LinearConnector"


def test_save_and_reload_a_model_with_components(my_parts, tmp_path):
    cfg = tiny_config(weak=1, top_k=1).replace(
        weak_encoders={
            "c": EncoderConfig(component=f"{my_parts}.Conv", kwargs={"hop": 640}, freeze=False),
            "d": EncoderConfig(component=f"{my_parts}.Conv", kwargs={"out_dim": 6}),
        },
        router=RouterConfig(component=f"{my_parts}.DurationRouter", top_k=1, kwargs={"buckets": 3}),
    )
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(
        ConfigError,
        match=r"^model\.weak_encoders\.c: component 'my_parts\.Conv'.*allow_components=\['my_parts'\]",
    ):
        MoWEAudioLLM.from_pretrained(tmp_path / "m")
    again = MoWEAudioLLM.from_pretrained(tmp_path / "m", allow_components=[my_parts]).eval()
    ids, wave_ = torch.tensor([[1, 5, 7, 8], [1, 5, 7, 8]]), torch.randn(2, 9000)
    lengths = torch.tensor([9000, 3000])
    with torch.no_grad():
        assert torch.equal(model(ids, wave_, lengths).logits, again(ids, wave_, lengths).logits)


def _write_wav(path, sr: int) -> None:
    write_tone_wav(path, 440, 0.25, sr=sr, amplitude=9000)


def test_the_processor_takes_an_audio_clip_from_load_audio(tmp_path):
    from mowe.data.audio import load_audio
    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer

    _write_wav(tmp_path / "a.wav", 22050)
    proc = MoWEProcessor(train_bpe_tokenizer(["what is it", "a tone"] * 20, vocab_size=280))
    by_path = proc(text="what is it", audio=str(tmp_path / "a.wav"))
    by_clip = proc(text="what is it", audio=load_audio(tmp_path / "a.wav"))
    assert torch.equal(by_path["waveforms"], by_clip["waveforms"])
    assert torch.equal(by_path["input_ids"], by_clip["input_ids"])
    # A clip at another rate is resampled as the file is; a contradicting sampling_rate= is an error.
    by_22k = proc(text="what is it", audio=load_audio(tmp_path / "a.wav", sample_rate=22050))
    torch.testing.assert_close(by_22k["waveforms"], by_path["waveforms"], atol=1e-4, rtol=0)
    with pytest.raises(MoWEInputError, match="is at 22050 Hz but sampling_rate=16000"):
        proc(text="what is it", audio=load_audio(tmp_path / "a.wav", sample_rate=22050), sampling_rate=16000)


def test_a_component_encoder_entry_is_saved_as_family_component():
    from mowe.builders import build_encoder
    from mowe.config import EncoderConfig, from_dict, to_dict

    cfg = from_dict(EncoderConfig, {"component": "my_parts.Conv", "width": 8}, where="weak.c")
    assert cfg.family == "component" and cfg.kwargs == {"width": 8}
    assert from_dict(EncoderConfig, to_dict(cfg), where="weak.c") == cfg  # config.json round trip
    assert EncoderConfig().family == "whisper"
    with pytest.raises(ConfigError, match="family 'component' but no component"):
        build_encoder(EncoderConfig(family="component"), name="c")


def test_build_and_load_errors_name_config_keys_in_one_form(my_parts, tmp_path):
    """Building, the run-file loader and the config.json loader all name a model key as ``model.<path>``."""
    import json

    from mowe.config import LLMConfig
    from mowe.hf.config import read_mowe_config

    cfg = tiny_config(weak=1).replace(router=RouterConfig(component=f"{my_parts}.DurationRouter", top_k=1))
    with pytest.raises(
        ConfigError, match=r"^model\.router: component 'my_parts\.DurationRouter' is outside mowe"
    ):
        MoWEAudioLLM.from_config(cfg, allow_components=["other"])
    with pytest.raises(
        ConfigError, match=r"^model\.weak_encoders\.c: component 'my_parts\.Nope': 'my_parts' has no"
    ):
        MoWEAudioLLM.from_config(
            cfg.replace(weak_encoders={"c": EncoderConfig(component=f"{my_parts}.Nope")})
        )
    with pytest.raises(ConfigError, match=r"^model\.llm: set name_or_path"):
        MoWEAudioLLM.from_config(tiny_config(weak=False).replace(llm=LLMConfig()))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mowe", "router": {"top_k": "two"}}))
    with pytest.raises(ConfigError, match=r"config\.json: model\.router\.top_k: expected int"):
        read_mowe_config(tmp_path / "config.json")
    with pytest.raises(ConfigError, match=r"^model\.router\.top_k: expected int"):
        from_dict(
            MoWEConfig, {"router": {"top_k": "two"}}, where="model"
        )  # the run file's section, as loaded
