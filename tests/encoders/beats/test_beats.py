"""BEATs encoder: official checkpoint format, frontend, padding, and the math against a plain reference."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mowe.encoders.base import AudioEncoder, check_encoder_output
from mowe.encoders.beats import BEATsConfig, BEATsEncoder, KaldiFbank
from mowe.errors import CheckpointError, ConfigError, MoWEInputError

SR = 16_000


def _wave(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    return (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(n, generator=g)).float()


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = _wave(n, seed + i)
    return wav, torch.tensor(lengths)


def _expected_tokens(n_samples: int, patch: int = 16) -> int:
    frames = 1 + (n_samples - 400) // 160
    return (frames // patch) * (128 // patch)


@pytest.fixture(scope="module")
def tiny() -> BEATsEncoder:
    torch.manual_seed(0)
    return BEATsEncoder.from_preset("tiny").eval()


# ------------------------------------------------------------------------------------------ shapes
def test_shapes_lengths_and_protocol(tiny):
    assert isinstance(tiny, AudioEncoder)
    assert tiny.out_dim == 64 and tiny.frame_rate == 50.0 and tiny.min_samples == 2800 and tiny.source is None
    lengths = [2800, 4321, 16000, 9999]
    wav, lens = _batch(lengths)
    out = check_encoder_output(tiny(wav, lens, output_hidden_states=True), batch=4, out_dim=64, who="beats")
    want = [_expected_tokens(n) for n in lengths]
    assert want == [8, 8, 48, 24]  # 2800 samples = 16 frames = exactly one row of 8 patches
    assert out.lengths.tolist() == want and out.lengths.dtype == torch.long
    assert out.features.shape == (4, max(want), 64)
    assert out.hidden_states.shape == (4, 2 + 1, max(want), 64)
    torch.testing.assert_close(out.hidden_states[:, -1], out.features)
    for i, n in enumerate(want):
        assert out.features[i, n:].abs().sum() == 0 and out.features[i, :n].abs().sum() > 0
        assert out.hidden_states[i, :, n:].abs().sum() == 0
    assert tiny.out_lengths(lens).tolist() == want
    # Extra trailing padding in the tensor does not add frames.
    wide = F.pad(wav, (0, 5000))
    torch.testing.assert_close(tiny(wide, lens).features, out.features)


def test_too_short_clip_is_refused(tiny):
    wav, lens = _batch([4000, 2799])
    with pytest.raises(MoWEInputError, match=r"clip 1 .* 2799 samples.*at least 2800"):
        tiny(wav, lens)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        # pre-LN, no relative bias, odd conv kernel, no post_extract_proj, conv bias: the other branches
        {
            "layer_norm_first": True,
            "deep_norm": False,
            "relative_position_embedding": False,
            "gru_rel_pos": False,
            "conv_pos": 15,
            "embed_dim": 64,
            "conv_bias": True,
            "finetuned_model": True,
        },
    ],
)
def test_padding_does_not_change_valid_features(overrides):
    torch.manual_seed(1)
    enc = BEATsEncoder.from_preset("tiny", **overrides).eval()
    short = _wave(5000, seed=3)
    alone = enc(short[None], torch.tensor([5000]), output_hidden_states=True)
    wav, lens = _batch([20000, 5000, 13000], seed=10)
    wav[1] = 0
    wav[1, :5000] = short
    both = enc(wav, lens, output_hidden_states=True)
    n = int(alone.lengths[0])
    assert int(both.lengths[1]) == n
    torch.testing.assert_close(both.features[1, :n], alone.features[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(both.hidden_states[1, :, :n], alone.hidden_states[0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ frontend
def _numpy_kaldi_fbank(wav: np.ndarray) -> np.ndarray:
    """Kaldi fbank written out frame by frame and filter by filter, in float64 (Povey, 2011 Kaldi docs)."""
    x = wav.astype(np.float64) * 32768.0
    n_frames = 1 + (len(x) - 400) // 160
    n = np.arange(400)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(20.0), mel(8000.0)
    delta = (hi - lo) / 129
    banks = np.zeros((128, 257))
    for m in range(128):
        left, centre, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        for k in range(256):
            z = mel(k * 16000 / 512)
            if left < z <= centre:
                banks[m, k] = (z - left) / (centre - left)
            elif centre < z < right:
                banks[m, k] = (right - z) / (right - centre)
    out = np.zeros((n_frames, 128))
    for i in range(n_frames):
        frame = x[i * 160 : i * 160 + 400].copy()
        frame -= frame.mean()
        emph = np.empty_like(frame)
        emph[0] = frame[0] - 0.97 * frame[0]
        for j in range(1, 400):
            emph[j] = frame[j] - 0.97 * frame[j - 1]
        padded = np.zeros(512)
        padded[:400] = emph * window
        power = np.abs(np.fft.rfft(padded)) ** 2
        out[i] = np.log(np.maximum(banks @ power, np.finfo(np.float32).eps))
    return out


def test_fbank_matches_kaldi_reference():
    wav = _wave(4321, seed=5).numpy()
    ref = _numpy_kaldi_fbank(wav)
    got = KaldiFbank()(torch.from_numpy(wav)[None] * 2**15)[0]
    assert ref.shape == (1 + (4321 - 400) // 160, 128) == tuple(got.shape)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------ reference forward
def _reference_forward(sd: dict, cfg: dict, wav: torch.Tensor) -> torch.Tensor:
    """One clip through the official BEATs computation, written plainly from the state dict (float64).

    Follows the official attention literally: q scaled by head_dim^-0.5 / 32, scores shifted by their row max
    and multiplied back by 32, gated bias added, softmax.
    """
    sd = {k: v.double() for k, v in sd.items()}
    fb = torch.from_numpy(_numpy_kaldi_fbank(wav.numpy()))
    fb = (fb - 15.41663) / (2 * 6.55582)
    p, e, d, h = (
        cfg["input_patch_size"],
        cfg["embed_dim"],
        cfg["encoder_embed_dim"],
        cfg["encoder_attention_heads"],
    )
    x = F.conv2d(fb[None, None], sd["patch_embedding.weight"], stride=p)  # (1, e, t, f)
    x = x.reshape(1, e, -1).transpose(1, 2)[0]  # official flattening
    x = F.layer_norm(x, (e,), sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = x @ sd["post_extract_proj.weight"].T + sd["post_extract_proj.bias"]
    k = cfg["conv_pos"]
    w = torch._weight_norm(sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"], 2)
    conv = F.conv1d(
        x.T[None], w, sd["encoder.pos_conv.0.bias"], padding=k // 2, groups=cfg["conv_pos_groups"]
    )[0]
    if k % 2 == 0:
        conv = conv[:, :-1]
    x = x + F.gelu(conv).T
    x = F.layer_norm(x, (d,), sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    t, hd = x.shape[0], d // h

    nb, md = cfg["num_buckets"], cfg["max_distance"]
    half, exact = nb // 2, nb // 4
    buckets = torch.zeros(t, t, dtype=torch.long)
    for i in range(t):
        for j in range(t):
            rel = j - i
            dist = abs(rel)
            if dist < exact:
                b = dist
            else:
                b = min(exact + int(math.log(dist / exact) / math.log(md / exact) * (half - exact)), half - 1)
            buckets[i, j] = b + (half if rel > 0 else 0)
    table = sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    pos_bias = table[buckets].permute(2, 0, 1)  # (h, t, t)

    alpha = (2 * cfg["encoder_layers"]) ** 0.25
    for li in range(cfg["encoder_layers"]):
        pre = f"encoder.layers.{li}."

        def lin(y, name, pre=pre):
            return y @ sd[pre + name + ".weight"].T + sd[pre + name + ".bias"]

        q = lin(x, "self_attn.q_proj").view(t, h, hd).transpose(0, 1)
        kk = lin(x, "self_attn.k_proj").view(t, h, hd).transpose(0, 1)
        v = lin(x, "self_attn.v_proj").view(t, h, hd).transpose(0, 1)
        scores = (q * hd**-0.5 / 32) @ kk.transpose(1, 2)
        scores = (scores - scores.max(dim=-1, keepdim=True).values) * 32
        g = (
            q @ sd[pre + "self_attn.grep_linear.weight"].T + sd[pre + "self_attn.grep_linear.bias"]
        )  # (h, t, 8)
        g = torch.sigmoid(g.view(h, t, 2, 4).sum(-1))
        gate_a, gate_b = g[..., :1], g[..., 1:]
        gate = gate_a * (gate_b * sd[pre + "self_attn.grep_a"][0] - 1.0) + 2.0
        attn = torch.softmax(scores + gate * pos_bias, dim=-1) @ v
        attn = lin(attn.transpose(0, 1).reshape(t, d), "self_attn.out_proj")
        x = F.layer_norm(
            x * alpha + attn,
            (d,),
            sd[pre + "self_attn_layer_norm.weight"],
            sd[pre + "self_attn_layer_norm.bias"],
        )
        ffn = lin(F.gelu(lin(x, "fc1")), "fc2")
        x = F.layer_norm(
            x * alpha + ffn, (d,), sd[pre + "final_layer_norm.weight"], sd[pre + "final_layer_norm.bias"]
        )
    return x


def test_forward_matches_independent_reference():
    torch.manual_seed(2)
    enc = BEATsEncoder.from_preset("tiny").eval()
    with torch.no_grad():  # make the gates and the bias matter: random, non-trivial values
        for name, param in enc.named_parameters():
            if "grep" in name or "relative_attention_bias" in name:
                param.normal_(0.0, 0.5)
    wav = _wave(48_000, seed=7)  # 298 frames -> 144 tokens: offsets reach the log-spaced buckets (>= 80)
    got = enc(wav[None], torch.tensor([len(wav)])).features[0]
    want = _reference_forward(enc.state_dict(), enc.config.to_dict(), wav)
    assert got.shape == want.shape == (144, 64)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=0)


def test_weight_norm_conv_matches_torch_weight_norm():
    """Our weight_g/weight_v mean what torch.nn.utils.weight_norm(conv, dim=2) (the official call) means."""
    enc = BEATsEncoder.from_preset("tiny")
    ours = enc.encoder.pos_conv[0]
    conv = torch.nn.Conv1d(64, 64, 16, padding=8, groups=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        conv = torch.nn.utils.weight_norm(conv, name="weight", dim=2)
    official = conv.state_dict()
    assert {k: tuple(v.shape) for k, v in official.items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }
    with torch.no_grad():
        official["weight_g"].mul_(torch.rand_like(official["weight_g"]) + 0.5)
    ours.load_state_dict(official)
    conv.load_state_dict(official)
    x = torch.randn(2, 64, 30)
    torch.testing.assert_close(ours(x), conv(x))


# ------------------------------------------------------------------------------------------ checkpoints
def _official_keys(cfg: BEATsConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the official module (unilm beats/BEATs.py, backbone.py) for ``cfg``."""
    p, e, d, h = cfg.input_patch_size, cfg.embed_dim, cfg.encoder_embed_dim, cfg.encoder_attention_heads
    keys: dict[str, tuple[int, ...]] = {"patch_embedding.weight": (e, 1, p, p)}
    if cfg.conv_bias:
        keys["patch_embedding.bias"] = (e,)
    keys |= {"layer_norm.weight": (e,), "layer_norm.bias": (e,)}
    if e != d:
        keys |= {"post_extract_proj.weight": (d, e), "post_extract_proj.bias": (d,)}
    keys |= {
        "encoder.pos_conv.0.weight_g": (1, 1, cfg.conv_pos),
        "encoder.pos_conv.0.weight_v": (d, d // cfg.conv_pos_groups, cfg.conv_pos),
        "encoder.pos_conv.0.bias": (d,),
    }
    for i in range(cfg.encoder_layers):
        pre = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            keys |= {f"{pre}self_attn.{proj}.weight": (d, d), f"{pre}self_attn.{proj}.bias": (d,)}
        if cfg.relative_position_embedding:  # shared module: listed under every layer by state_dict()
            keys[f"{pre}self_attn.relative_attention_bias.weight"] = (cfg.num_buckets, h)
        if cfg.gru_rel_pos:
            keys |= {
                f"{pre}self_attn.grep_linear.weight": (8, d // h),
                f"{pre}self_attn.grep_linear.bias": (8,),
                f"{pre}self_attn.grep_a": (1, h, 1, 1),
            }
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            keys |= {f"{pre}{norm}.weight": (d,), f"{pre}{norm}.bias": (d,)}
        keys |= {
            f"{pre}fc1.weight": (cfg.encoder_ffn_embed_dim, d),
            f"{pre}fc1.bias": (cfg.encoder_ffn_embed_dim,),
            f"{pre}fc2.weight": (d, cfg.encoder_ffn_embed_dim),
            f"{pre}fc2.bias": (d,),
        }
    keys |= {"encoder.layer_norm.weight": (d,), "encoder.layer_norm.bias": (d,)}
    if cfg.finetuned_model:
        keys |= {"predictor.weight": (cfg.predictor_class, d), "predictor.bias": (cfg.predictor_class,)}
    return keys


@pytest.mark.parametrize(
    "overrides",
    [
        {"finetuned_model": True},
        {"relative_position_embedding": False, "gru_rel_pos": False, "embed_dim": 64, "conv_bias": True},
    ],
)
def test_state_dict_names_are_the_official_ones(overrides):
    enc = BEATsEncoder.from_preset("tiny", **overrides)
    assert enc.config.encoder_layers == 2
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert got == _official_keys(enc.config)


# The cfg of an official fine-tuned checkpoint (BEATs_iter3_plus_AS2M.pt), with the sizes shrunk.
OFFICIAL_CFG = {
    "activation_dropout": 0.0,
    "activation_fn": "gelu",
    "attention_dropout": 0.0,
    "conv_bias": False,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "deep_norm": True,
    "dropout": 0.0,
    "dropout_input": 0.0,
    "embed_dim": 32,
    "encoder_attention_heads": 4,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_layerdrop": 0.05,
    "encoder_layers": 2,
    "finetuned_model": True,
    "gru_rel_pos": True,
    "input_patch_size": 16,
    "layer_norm_first": False,
    "layer_wise_gradient_decay_ratio": 0.6,
    "max_distance": 800,
    "num_buckets": 320,
    "predictor_class": 527,
    "predictor_dropout": 0.0,
    "relative_position_embedding": True,
}


def _official_file(tmp_path, **cfg_changes) -> tuple[str, BEATsEncoder]:
    torch.manual_seed(4)
    enc = BEATsEncoder(BEATsConfig.from_dict({**OFFICIAL_CFG, **cfg_changes})).eval()
    path = str(tmp_path / "BEATs_tiny.pt")
    enc.save_checkpoint(path)
    return path, enc


def test_checkpoint_round_trip(tmp_path):
    path, enc = _official_file(tmp_path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"cfg", "model"} and raw["cfg"] == OFFICIAL_CFG
    assert set(raw["model"]) == set(_official_keys(enc.config))
    back = BEATsEncoder.from_checkpoint(path).eval()
    assert back.source == path and back.config == enc.config
    assert not any(p.requires_grad for p in back.parameters())
    wav, lens = _batch([16000, 7000])
    with torch.no_grad():  # same kernels for both (autograd can change the CPU attention path)
        torch.testing.assert_close(back(wav, lens).features, enc(wav, lens).features, atol=0, rtol=0)
    trainable = BEATsEncoder.from_checkpoint(path, freeze=False)
    assert all(p.requires_grad for p in trainable.parameters())


def test_checkpoint_with_only_layer0_bias_table_loads_and_a_differing_copy_is_named(tmp_path):
    path, enc = _official_file(tmp_path)
    raw, key = (
        torch.load(path, map_location="cpu", weights_only=True),
        "layers.1.self_attn.relative_attention_bias",
    )
    copy = raw["model"].pop(f"encoder.{key}.weight").clone()  # torch.save kept the copies as one storage
    torch.save(raw, path)
    back = BEATsEncoder.from_checkpoint(path).eval()
    wav, lens = _batch([9000])
    with torch.no_grad():
        torch.testing.assert_close(back(wav, lens).features, enc(wav, lens).features, atol=0, rtol=0)
    raw["model"][f"encoder.{key}.weight"] = copy.index_fill_(0, torch.tensor([0]), 1.0)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"{key}\.weight differs from encoder\.layers\.0\.self_attn\."):
        BEATsEncoder.from_checkpoint(path)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="nope.pt"):
        BEATsEncoder.from_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path, _ = _official_file(tmp_path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="BEATs_tiny.pt"):
        BEATsEncoder.from_checkpoint(path)


def test_missing_and_unexpected_keys(tmp_path):
    path, _ = _official_file(tmp_path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    del raw["model"]["encoder.layers.1.fc2.bias"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"BEATs_tiny\.pt.*encoder\.layers\.1\.fc2\.bias"):
        BEATsEncoder.from_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw["model"]["encoder.layers.1.fc2.bias"] = torch.zeros(64)
    raw["model"]["encoder.extra.weight"] = torch.zeros(3)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"encoder\.extra\.weight"):
        BEATsEncoder.from_checkpoint(path)
    del raw["model"]["encoder.extra.weight"]
    raw["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(3, 3)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.0\.fc1\.weight has shape \(3, 3\)"):
        BEATsEncoder.from_checkpoint(path)


def test_bad_cfg_and_layout(tmp_path):
    path, _ = _official_file(tmp_path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw["cfg"]["warp_factor"] = 9
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"BEATs_tiny\.pt.*warp_factor"):
        BEATsEncoder.from_checkpoint(path)
    torch.save({"state_dict": raw["model"]}, path)
    with pytest.raises(CheckpointError, match="'cfg' and 'model'"):
        BEATsEncoder.from_checkpoint(path)


def _leave_mark(path):
    with open(path, "w") as f:
        f.write("code ran")
    return {}


class _Payload:
    """Pickles to a call of ``_leave_mark``: loading it without weights_only would run code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_leave_mark, (self.path,))


def test_checkpoint_is_loaded_with_weights_only(tmp_path, monkeypatch):
    marker = str(tmp_path / "marker")
    path = str(tmp_path / "evil.pt")
    torch.save({"cfg": dict(OFFICIAL_CFG), "model": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        BEATsEncoder.from_checkpoint(path)
    assert not os.path.exists(marker)
    torch.load(path, weights_only=False)  # the file really would run code when unpickled freely
    assert os.path.exists(marker)

    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    good, _ = _official_file(tmp_path)
    monkeypatch.setattr(torch, "load", spy)
    BEATsEncoder.from_checkpoint(good)
    assert seen.get("weights_only") is True and seen.get("map_location") == "cpu"


# ------------------------------------------------------------------------------------------ config / freezing
def test_config_errors():
    with pytest.raises(ConfigError, match="'huge'"):
        BEATsEncoder.from_preset("huge")
    with pytest.raises(ConfigError, match="'encoder_width'"):
        BEATsEncoder.from_preset("tiny", encoder_width=3)
    with pytest.raises(ConfigError, match="encoder_attention_heads"):
        BEATsEncoder.from_preset("tiny", encoder_attention_heads=5)
    with pytest.raises(ConfigError, match=r"encoder_layers: expected int"):
        BEATsConfig.from_dict({"encoder_layers": "12"})
    with pytest.raises(ConfigError, match="activation_fn"):
        BEATsConfig.from_dict({"activation_fn": "glu"})
    assert BEATsConfig.from_dict(OFFICIAL_CFG).to_dict()["layer_wise_gradient_decay_ratio"] == 0.6


def test_freeze_flag():
    frozen = BEATsEncoder.from_preset("tiny")
    assert not any(p.requires_grad for p in frozen.parameters())
    enc = BEATsEncoder.from_preset("tiny", freeze=False)
    wav, lens = _batch([6000, 3000])
    # (a plain sum would give zero gradients: the last LayerNorm output sums to its bias)
    feats = enc(wav, lens).features
    (feats * torch.randn_like(feats)).sum().backward()
    assert enc.patch_embedding.weight.grad is not None and enc.patch_embedding.weight.grad.abs().sum() > 0
    assert enc.encoder.layers[0].self_attn.relative_attention_bias.weight.grad is not None
