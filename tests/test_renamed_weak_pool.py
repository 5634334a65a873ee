"""The weak pool has one name, ``weak_encoders`` (issue 25): config key, module attribute, stage part.

Files written under the old names -- a config with the key ``weak``, weights with ``pool.`` keys -- still load
through the code a user runs (``from_pretrained``, ``load_weights``, the transformers Auto classes,
``load_state_dict``, resume), with a ``DeprecationWarning`` naming the new name. The old-format files are made
here by renaming a freshly saved one."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from _trainer_helpers import SyntheticDataset, collate, tiny_model
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from mowe.config import MoWEConfig, from_dict, to_dict
from mowe.curriculum import Stage
from mowe.errors import CheckpointError, ConfigError
from mowe.model import MoWEAudioLLM
from mowe.training.trainer import TrainConfig, Trainer


def _to_old_format(folder) -> None:
    """Rewrite a saved folder as mowe wrote it before the rename: ``weak`` in config.json, ``pool.`` keys."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg = {("weak" if k == "weak_encoders" else k): v for k, v in cfg.items()}
    (folder / "config.json").write_text(json.dumps(cfg))
    _old_keys(folder / "model.safetensors")


def _old_keys(file) -> None:
    sd = load_file(str(file))
    assert any(k.startswith("weak_encoders.") for k in sd)
    save_file(
        {
            ("pool." + k[len("weak_encoders.") :] if k.startswith("weak_encoders.") else k): v
            for k, v in sd.items()
        },
        str(file),
        metadata={"format": "pt"},
    )


def _forward(model):
    torch.manual_seed(0)
    wav = torch.randn(2, 8000) * 0.1
    ids = torch.tensor([[5, 3, 7, 8], [5, 3, 9, 2]])
    with torch.no_grad():
        return model.eval()(input_ids=ids, waveforms=wav, wave_lengths=torch.tensor([8000, 6000])).logits


@pytest.fixture
def old_folder(tmp_path):
    torch.manual_seed(3)
    model = MoWEAudioLLM.from_config(tiny_config(weak=True)).eval()
    with torch.no_grad():
        for p in model.weak_encoders.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the pool's weights must come from the file
    model.save_pretrained(tmp_path / "m")
    _to_old_format(tmp_path / "m")
    return model, tmp_path / "m"


def test_one_name_for_the_weak_pool():
    cfg = tiny_config(weak=True)
    model = MoWEAudioLLM.from_config(cfg)
    assert list(cfg.weak_encoders) == model.weak_encoders.names
    assert any(k.startswith("weak_encoders.encoders.") for k in model.state_dict())
    assert not any(k.startswith("pool.") for k in model.state_dict())
    assert "weak_encoders" in to_dict(cfg) and "weak" not in to_dict(cfg)
    assert not hasattr(model, "pool")


def test_a_config_with_the_old_key_loads_with_a_warning():
    new = to_dict(tiny_config(weak=True))
    old = {("weak" if k == "weak_encoders" else k): v for k, v in new.items()}
    with pytest.warns(
        DeprecationWarning, match=r"model\.weak: the key 'weak' is deprecated; use 'weak_encoders'"
    ):
        got = from_dict(MoWEConfig, old, where="model")
    assert got == from_dict(MoWEConfig, new, where="model")
    with pytest.raises(
        ConfigError, match=r"^model\.weak: the old name of 'weak_encoders', which is given too"
    ):
        from_dict(MoWEConfig, {**new, "weak": new["weak_encoders"]}, where="model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new key: no warning
        from_dict(MoWEConfig, new, where="model")


def test_an_old_folder_loads_through_from_pretrained_load_weights_and_auto(old_folder):
    from transformers import AutoConfig, AutoModel

    model, folder = old_folder
    want = _forward(model)
    with pytest.warns(DeprecationWarning) as caught:
        loaded = MoWEAudioLLM.from_pretrained(folder)
    said = " ".join(str(w.message) for w in caught)
    assert "'weak_encoders'" in said and "'weak_encoders.'" in said and "model.safetensors" in said
    assert torch.equal(_forward(loaded), want)

    torch.manual_seed(9)
    fresh = MoWEAudioLLM.from_config(model.config)
    assert not torch.equal(_forward(fresh), want)
    with pytest.warns(
        DeprecationWarning, match=r"'pool\.' are deprecated; they now start with 'weak_encoders\.'"
    ):
        fresh.load_weights(folder)
    assert torch.equal(_forward(fresh), want)

    with pytest.warns(DeprecationWarning, match="'weak_encoders'"):
        hf = AutoConfig.from_pretrained(folder)
    as_json = lambda c: json.loads(json.dumps(to_dict(c)))  # noqa: E731 (tuples in overrides come back as lists)
    assert as_json(hf.to_mowe_config()) == as_json(model.config) and "weak" not in hf.to_dict()
    with pytest.warns(DeprecationWarning):
        auto = AutoModel.from_pretrained(folder)
    assert torch.equal(_forward(auto), want)


def test_load_state_dict_takes_old_keys(old_folder):
    model, _ = old_folder
    sd = {
        ("pool." + k[len("weak_encoders.") :] if k.startswith("weak_encoders.") else k): v
        for k, v in model.state_dict().items()
    }
    torch.manual_seed(9)
    fresh = MoWEAudioLLM.from_config(model.config)
    with pytest.warns(DeprecationWarning, match="load_state_dict: state-dict keys under 'pool.'"):
        fresh.load_state_dict(sd)  # strict: every old key found its new name
    assert torch.equal(_forward(fresh), _forward(model))
    both = {**sd, **{k: v for k, v in model.state_dict().items() if k.startswith("weak_encoders.")}}
    with pytest.raises(CheckpointError, match="the old and the new name of one weight"):
        fresh.load_state_dict(both)


def test_resume_from_a_checkpoint_with_old_keys(tmp_path):
    stages = [Stage("a", ("connector", "routers"), 4, 2e-3)]

    def cfg(out):
        return TrainConfig(
            output_dir=str(out),
            batch_size=2,
            progress=False,
            log_every=1,
            save_every=2,
            save_final=False,
            keep_last_checkpoints=5,
        )

    model = tiny_model(weak=1)
    Trainer(
        model, SyntheticDataset(12), config=cfg(tmp_path / "full"), stages=stages, collate_fn=collate
    ).train()
    step2 = tmp_path / "full" / "checkpoints" / "step-2"
    _old_keys(step2 / "model.safetensors")
    fresh = tiny_model(seed=123, weak=1)
    with pytest.warns(DeprecationWarning, match=r"step-2/model\.safetensors: state-dict keys under 'pool\.'"):
        res = Trainer(
            fresh, SyntheticDataset(12), config=cfg(tmp_path / "resumed"), stages=stages, collate_fn=collate
        ).train(resume=str(step2))
    assert res.global_step == 4
    want, got = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_an_fsdp_checkpoint_with_old_names_loads_model_and_optimizer_state(tmp_path):
    """The DCP ``sharded/`` folder of an FSDP run is keyed by parameter names too; one written before the
    rename loads into the current names (in one process, as DCP allows without a process group)."""
    import torch.distributed.checkpoint as dcp
    from torch import nn

    from mowe.training.checkpoint import SHARDED_DIR, _load_sharded
    from mowe.training.resume import check_sharded_weights

    key = "pool.encoders.a.weight"
    old = {
        "model": {key: torch.arange(4.0).reshape(2, 2), "connector.bias": torch.ones(2)},
        "optim": {
            "state": {key: {"exp_avg": torch.full((2, 2), 2.0), "step": torch.tensor(3.0)}},
            "param_groups": [{"lr": 0.1, "params": [key]}],
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "torch.distributed ... uninitialized": one process
        dcp.save(old, checkpoint_id=str(tmp_path / SHARDED_DIR))
    model = nn.Module()
    model.weak_encoders = nn.Module()
    model.weak_encoders.encoders = nn.ModuleDict({"a": nn.Linear(2, 2, bias=False)})
    model.connector = nn.Linear(2, 2)
    model.connector.weight.requires_grad_(False)
    assert check_sharded_weights(model, str(tmp_path))  # the old names fit this model
    new = "weak_encoders.encoders.a.weight"
    template = {new: torch.zeros(2, 2), "connector.bias": torch.zeros(2)}
    optim = {
        "state": {new: {"exp_avg": torch.zeros(2, 2), "step": torch.tensor(0.0)}},
        "param_groups": [{"lr": 0.1, "params": [new]}],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.warns(DeprecationWarning, match=r"sharded: state-dict keys under 'pool\.'"):
            _load_sharded(str(tmp_path), "model", template)
        with pytest.warns(DeprecationWarning):
            _load_sharded(str(tmp_path), "optim", optim)
    assert torch.equal(template[new], old["model"][key])
    assert torch.equal(template["connector.bias"], torch.ones(2))
    state = optim["state"][new]
    assert torch.equal(state["exp_avg"], torch.full((2, 2), 2.0)) and float(state["step"]) == 3.0
