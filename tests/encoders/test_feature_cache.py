"""The on-disk feature cache of frozen encoders (issue 13): exactness, invalidation, size bound, sharing,
damage."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import WHISPER_TINY, make_batch, tiny_config
from torch import nn

from mowe import MoWEAudioLLM
from mowe.encoders import EncoderOutput, WhisperEncoder
from mowe.encoders.cache import (
    _WEIGHT_HASHES,
    FeatureCache,
    cached_encode,
    encoder_fingerprint,
)

REPO = Path(__file__).resolve().parents[2]


def _whisper(**kw) -> WhisperEncoder:
    torch.manual_seed(0)
    return WhisperEncoder.from_preset("tiny", pad_to_30s=False, **WHISPER_TINY, **kw).eval()


def _clips(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


def _valid(out: EncoderOutput) -> EncoderOutput:
    """Live output with frames past each clip's length zeroed (what the cache returns there)."""
    keep = torch.arange(out.features.shape[1])[None, :] < out.lengths[:, None]
    return out.features * keep[..., None]


def test_model_with_cache_equals_live_bit_for_bit_on_mixed_hits_and_misses(tmp_path):
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(tiny_config(top_k=2)).eval()
    keys = list(model.state_dict())
    wav, wl, *_ = make_batch((16000, 11000, 6000))
    with torch.no_grad():
        live = model.encode_audio(wav, wl)
        cache = model.use_feature_cache(tmp_path / "feats")
        assert model.feature_cache is cache and model.weak_encoders.feature_cache is cache
        assert list(model.state_dict()) == keys  # the cache is not a module: checkpoints do not change
        model.encode_audio(wav[[0, 2]], wl[[0, 2]])  # warm two of the three clips
        mixed = model.encode_audio(wav, wl)  # clip 1 misses, clips 0 and 2 hit, for every encoder
        warm = model.encode_audio(wav, wl)
    assert cache.stats.hits["strong"] == 2 + 3 and cache.stats.misses["strong"] == 2 + 1
    used = set(live.router.indices.flatten().tolist())
    assert len(used) >= 2 and all(cache.stats.hits[model.weak_encoders.names[e]] > 0 for e in used)
    for got in (mixed, warm):
        assert torch.equal(got.embeds, live.embeds) and torch.equal(got.lengths, live.lengths)
        assert torch.equal(got.router.gates, live.router.gates)
    model.use_feature_cache(None)
    assert model.feature_cache is None and model.weak_encoders.feature_cache is None


def test_cached_encode_keeps_dtype_lengths_and_all_layer_hidden_states(tmp_path):
    enc = _whisper(output_all_layers=True)
    enc.encoder.to(torch.bfloat16)  # as from_pretrained(dtype=...) does: the mel frontend stays float32
    wav, wl = _clips([8000, 3000, 12000])
    cache = FeatureCache(tmp_path)
    with torch.no_grad():
        live = enc(wav, wl)
        cold = cached_encode(enc, wav, wl, cache, name="w")
        # Same clips in another order and batch: hits, padded to this batch's own longest clip.
        part = cached_encode(enc, wav[[1, 0], :8000], wl[[1, 0]], cache, name="w")
    assert cold.features.dtype == torch.bfloat16 and cold.features.shape == live.features.shape
    assert torch.equal(cold.lengths, live.lengths)
    assert torch.equal(cold.features, _valid(live))
    t = int(live.lengths.max())
    keep = (torch.arange(t)[None, :] < live.lengths[:, None])[:, None, :, None]
    assert torch.equal(cold.hidden_states, live.hidden_states * keep)
    assert part.features.shape[1] == int(live.lengths[0]) and cache.stats.hits["w"] == 2
    assert torch.equal(part.features[1], cold.features[0, : part.features.shape[1]])
    assert torch.equal(
        part.hidden_states[0, :, : int(live.lengths[1])], cold.hidden_states[1, :, : int(live.lengths[1])]
    )


def test_new_weights_or_settings_invalidate_and_the_weight_hash_is_memoised(tmp_path):
    enc = _whisper()
    wav, wl = _clips([8000, 5000])
    cache = FeatureCache(tmp_path)
    fp = encoder_fingerprint(enc)
    memo = _WEIGHT_HASHES[enc]
    assert encoder_fingerprint(enc) == fp and _WEIGHT_HASHES[enc] is memo  # no re-hash without a change
    with torch.no_grad():
        old = cached_encode(enc, wav, wl, cache)
        enc.encoder.layers[0].fc1.weight.mul_(1.5)  # an in-place step bumps the version counter
        assert encoder_fingerprint(enc) != fp
        new = cached_encode(enc, wav, wl, cache)
        assert torch.equal(new.features, _valid(enc(wav, wl))) and not torch.equal(new.features, old.features)
        other = _whisper()
        other.load_state_dict(enc.state_dict())
        other.source = "/somewhere/else"  # provenance only: not a setting
        assert encoder_fingerprint(other) == encoder_fingerprint(
            enc
        )  # same weights + settings: shared entries
        other.encoder.layers[0].fc1.weight.copy_(_whisper().encoder.layers[0].fc1.weight)
        assert encoder_fingerprint(other) == fp  # back to the original weights: the original entries
    assert cache.stats.misses["encoder"] == 4
    settings = [_whisper(bucket_padding=None), _whisper(output_all_layers=True)]
    faithful = _whisper()
    faithful.pad_to_30s = True
    wide = _whisper()
    wide.encoder.to(torch.float64)
    for changed in settings + [faithful, wide]:
        assert encoder_fingerprint(changed) != fp
    same = _whisper()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # frozen encoders run with autocast off: same entries
        assert encoder_fingerprint(same) == fp


def test_size_bound_evicts_least_recently_used_and_refuses_oversized_entries(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=5 * 4096)
    feats = [torch.full((16, 64), float(i)) for i in range(8)]  # 4096 bytes of data each
    for i in range(4):
        assert cache.put("fp", f"{i:040d}", feats[i])
    os.utime(cache.path("fp", f"{0:040d}"), (1, 1))  # entry 0 is the oldest ...
    for i in (1, 2, 3):
        os.utime(cache.path("fp", f"{i:040d}"), (2 + i, 2 + i))
    assert cache.get("fp", f"{0:040d}") is not None  # ... until a hit makes it the youngest
    for i in (4, 5):
        cache.put("fp", f"{i:040d}", feats[i])
    assert cache.size_bytes() <= 5 * 4096 and cache.stats.evicted >= 1
    assert cache.get("fp", f"{1:040d}") is None  # least recently used: gone
    for i in (0, 5):
        assert torch.equal(cache.get("fp", f"{i:040d}").features, feats[i])
    assert not cache.put("fp", "big" + "0" * 37, torch.zeros(200, 64)) and cache.stats.refused == 1
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(tmp_path, max_bytes=0)


_WORKER = textwrap.dedent("""
    import json, os, sys, time, warnings, torch
    sys.path.insert(0, {tests!r})
    from conftest import WHISPER_TINY
    from mowe.encoders import WhisperEncoder
    from mowe.encoders.cache import FeatureCache, cached_encode
    torch.manual_seed(0)
    enc = WhisperEncoder.from_preset("tiny", pad_to_30s=False, **WHISPER_TINY).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [int(2000 * 1.2 ** i) for i in range(8)]
    wav = torch.zeros(8, max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n, generator=g)
    wl = torch.tensor(lengths)
    cache = FeatureCache({root!r}, max_bytes={max_bytes})
    rank = int(sys.argv[1])
    bad = 0
    open({root!r} + f".ready{{rank}}", "w").close()
    while not all(os.path.exists({root!r} + f".ready{{r}}") for r in (0, 1)):  # start together
        time.sleep(0.01)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = [enc(wav[i:i + 1, :n], wl[i:i + 1]).features[0] for i, n in enumerate(lengths)]
        for step in range(100):
            pick = torch.randperm(8, generator=torch.Generator().manual_seed(step * 2 + rank))[:5]
            out = cached_encode(enc, wav[pick], wl[pick], cache)
            bad += sum(not torch.equal(out.features[j, :len(ref[i])], ref[i])
                       for j, i in enumerate(pick.tolist()))
            if rank == 1 and step % 4 == 3:
                cache.clear()  # deletes entries the other process may be reading or writing
    print(json.dumps({{"bad": bad, "damaged": cache.stats.damaged,
                      "warnings": [str(w.message) for w in caught],
                      "evicted": cache.stats.evicted, "hits": cache.stats.hits.get("encoder", 0),
                      "misses": cache.stats.misses.get("encoder", 0)}}))
""")


def test_two_processes_share_one_cache_without_partial_reads(tmp_path):
    # Lengths 20 % apart sit in length groups of their own, so a lone clip's features are the batch's exactly.
    root = tmp_path / "shared"
    script = tmp_path / "worker.py"
    # max_bytes holds a few entries, so both processes evict while the other reads and writes.
    script.write_text(_WORKER.format(tests=str(REPO / "tests"), root=str(root), max_bytes=25_000))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in (0, 1)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert r["bad"] == 0 and r["damaged"] == 0 and r["warnings"] == [], r
        assert r["hits"] > 0 and r["misses"] > 0 and r["evicted"] > 0
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".tmp-")]
    assert not leftovers


def test_damaged_entry_is_a_miss_that_names_the_file_and_is_rewritten(tmp_path):
    enc = _whisper()
    wav, wl = _clips([8000, 5000, 3000])
    cache = FeatureCache(tmp_path)
    with torch.no_grad():
        first = cached_encode(enc, wav, wl, cache)
    files = sorted(p for p in tmp_path.rglob("*.safetensors"))
    assert len(files) == 3
    files[0].write_bytes(files[0].read_bytes()[:-100])  # truncated
    files[1].write_bytes(b"\x00garbage" * 10)  # not safetensors at all
    with torch.no_grad(), pytest.warns(UserWarning) as caught:
        again = cached_encode(enc, wav, wl, cache)
    named = " ".join(str(w.message) for w in caught)
    assert str(files[0]) in named and str(files[1]) in named
    assert torch.equal(again.features, first.features) and cache.stats.damaged == 2
    assert cache.stats.misses["encoder"] == 3 + 2
    with torch.no_grad():
        cached_encode(enc, wav, wl, cache)  # rewritten entries now hit
    assert cache.stats.hits["encoder"] == 1 + 3


class _Energy(nn.Module):
    out_dim, frame_rate, min_samples = 4, 100.0, 160

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 4)

    def forward(self, wav, lengths):
        frames = wav[:, : wav.shape[1] // 160 * 160].unflatten(1, (-1, 160))
        return EncoderOutput(
            self.net(frames.pow(2).mean(-1, keepdim=True)), torch.div(lengths, 160, rounding_mode="floor")
        )


def test_trainable_or_train_mode_encoders_always_run_live(tmp_path):
    cache = FeatureCache(tmp_path)
    wav, wl = _clips([8000, 5000])
    trainable = _Energy()
    out = cached_encode(trainable, wav, wl, cache, name="trainable")
    out.features.sum().backward()  # the live graph is kept
    assert trainable.net.weight.grad is not None
    frozen_but_training = _whisper().train()
    for p in frozen_but_training.parameters():
        assert not p.requires_grad
    cached_encode(frozen_but_training, wav, wl, cache, name="train-mode")
    partly_training = _whisper()
    partly_training.encoder.layers[0].train()  # dropout inside one layer is live again
    cached_encode(partly_training, wav, wl, cache, name="part-train-mode")
    assert len(cache) == 0 and not cache.stats.misses and not cache.stats.hits
    # In a model: a trainable weak encoder runs live while the frozen ones are cached, in train mode too.
    cfg = tiny_config()
    from mowe.config import EncoderConfig

    cfg = cfg.replace(weak_encoders={**cfg.weak_encoders, "energy": EncoderConfig("custom", freeze=False)})
    model = MoWEAudioLLM.from_config(cfg, encoders={"energy": _Energy()}).train()
    with torch.no_grad():
        model.router.routers[0].logits.copy_(torch.tensor([0, 0, 0, 0, 10.0]))
    model.use_feature_cache(cache)
    wav, wl, ids, am, labels = make_batch()
    out = model(ids, wav, wl, attention_mask=am, labels=labels)
    out.loss.backward()
    assert (out.router.indices == 4).all() and model.weak_encoders.encoders[
        "energy"
    ].net.weight.grad is not None
    assert cache.stats.misses["strong"] == 3 and "energy" not in cache.stats.misses


def test_frozen_encoders_run_outside_autocast_so_training_and_evaluation_share_entries(tmp_path):
    enc = _whisper()
    wav, wl = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000])
    cache = FeatureCache(tmp_path)
    plain = cached_encode(enc, wav, wl, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        live = cached_encode(enc, wav, wl, None)  # no cache: still float32 arithmetic
        first = cached_encode(enc, wav, wl, cache)
    assert live.features.dtype == torch.float32 and torch.equal(live.features, plain.features)
    again = cached_encode(enc, wav, wl, cache)  # evaluation without autocast reads what training wrote
    assert torch.equal(again.features, first.features) and cache.stats.hits["encoder"] == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = enc(wav, wl).features  # the encoder called directly does follow autocast: other numbers
    assert not torch.equal(raw, plain.features)
