"""Feature cache for frozen encoders: one epoch of audio encoding live vs through a cold and a warm cache.

Configuration (the demo's shape at real encoder sizes): a frozen Whisper-tiny strong encoder on the
real-length path, a frozen weak pool of 2 Whisper-tiny (real length) + 2 demo-sized HuBERT encoders with top-1
routing, the MoWE tiny preset's router, connector and LLM; random weights (the cost is what is measured). ~200
clips of 1-6 s (tones + noise, numpy/torch-synthesised), batches of 16 in a fixed order.

An epoch is ``model.encode_audio`` over every batch (no grad, eval mode): strong encoder, routers, the
selected
weak encoders, connector. Variants:

* ``live``: no cache (every frozen encoder re-runs, as every epoch did before the cache);
* ``cold``: an empty cache: encoders run and every entry is hashed and written;
* ``warm``: the same epoch again: every frozen encoder's features are read from disk.

Printed: per-epoch seconds; ``frozen_encoder_speedup`` = seconds inside the strong and weak encoder calls,
live / warm (the issue's goal: >= 5); ``warm_speedup`` = the whole encoding epoch (routers and connector
included), live / warm; ``cold_overhead`` = cold / live; that the warm and cold epochs' audio tokens equal the
live epoch's bit for bit; and the cache's disk size per hour of audio.
``--quick``: tiny sizes and 24 clips (the smoke test).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import _common as C
import torch

import mowe.encoders.pool
import mowe.model
from mowe import MoWEAudioLLM
from mowe.encoders import HubertEncoder, WhisperEncoder
from mowe.encoders.cache import FeatureCache
from mowe.presets import mowe_paper


def build(quick: bool) -> MoWEAudioLLM:
    torch.manual_seed(0)
    size = C.QUICK_WHISPER if quick else {}
    weak_size = C.QUICK_WEAK_WHISPER if quick else {}

    def whisper(**kw):
        return WhisperEncoder.from_preset("tiny", pad_to_30s=False, **kw)

    encoders = {
        "strong": whisper(**size),
        "whisper_tiny_a": whisper(**weak_size),
        "whisper_tiny_b": whisper(**weak_size),
        "hubert_a": HubertEncoder.from_preset("hubert-base", **C.QUICK_HUBERT),
        "hubert_b": HubertEncoder.from_preset("hubert-base", **C.QUICK_HUBERT),
    }
    preset = mowe_paper(tiny=True, audio_token_id=5, vocab_size=256)
    return MoWEAudioLLM.from_config(preset.config, encoders=encoders).eval()


_ENCODER_SECONDS = [0.0]


def _timed(fn):
    def run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _ENCODER_SECONDS[0] += time.perf_counter() - t0

    return run


# Time the frozen-encoder part alone: every strong and weak encoder call of encode_audio goes through
# cached_encode (live when no cache is set), so wrapping its two call sites measures exactly that part.
mowe.model.cached_encode = _timed(mowe.model.cached_encode)
mowe.encoders.pool.cached_encode = _timed(mowe.encoders.pool.cached_encode)


def epoch(
    model: MoWEAudioLLM, wav: torch.Tensor, lengths: torch.Tensor, batch: int
) -> tuple[float, float, list]:
    """(epoch seconds, seconds inside the encoders, audio tokens per batch)."""
    outs = []
    _ENCODER_SECONDS[0] = 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(lengths), batch):
            wl = lengths[lo : lo + batch]
            outs.append(model.encode_audio(wav[lo : lo + batch, : int(wl.max())], wl).embeds)
    return time.perf_counter() - t0, _ENCODER_SECONDS[0], outs


def main() -> None:
    ap = C.parse_quick()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="live and warm epochs each (medians are reported)")
    args = ap.parse_args()
    C.set_threads(args.threads)
    n = 24 if args.quick else args.clips
    seconds = C.uniform_seconds(n, 1.0, 6.0, seed=0)
    wav, lengths = C.clips(seconds, seed=0)
    model = build(args.quick)
    root = tempfile.mkdtemp(prefix="mowe-bench-cache-")
    try:
        epoch(model, wav[: args.batch], lengths[: args.batch], args.batch)  # warm-up: allocator, kernels
        live_t, warm_t, live_e, warm_e = [], [], [], []
        t, e, live = epoch(model, wav, lengths, args.batch)
        live_t.append(t)
        live_e.append(e)
        cache = model.use_feature_cache(FeatureCache(root))
        cold_t, cold_e, cold = epoch(model, wav, lengths, args.batch)
        for r in range(args.repeats):
            t, e, warm = epoch(model, wav, lengths, args.batch)
            warm_t.append(t)
            warm_e.append(e)
            if r + 1 < args.repeats:  # interleave: drift of a shared machine hits both variants alike
                model.use_feature_cache(None)
                t, e, _ = epoch(model, wav, lengths, args.batch)
                live_t.append(t)
                live_e.append(e)
                model.use_feature_cache(cache)
        exact = all(torch.equal(a, b) for a, b in zip(live, warm)) and all(
            torch.equal(a, b) for a, b in zip(live, cold)
        )
        hours = sum(seconds) / 3600
        size = cache.size_bytes()
        live_m, warm_m = C.median(live_t), C.median(warm_t)
        enc_live, enc_warm = C.median(live_e), C.median(warm_e)
        C.log(
            f"{n} clips of 1-6 s ({sum(seconds):.0f} s audio), batch {args.batch}, "
            f"torch threads {torch.get_num_threads()}"
        )
        C.log(
            f"epoch live {live_m:.2f} s | cold cache {cold_t:.2f} s | warm cache {warm_m:.2f} s "
            f"(live runs {[round(x, 2) for x in live_t]}, warm runs {[round(x, 2) for x in warm_t]})"
        )
        C.log(
            f"frozen encoders alone: live {enc_live:.2f} s | cold {cold_e:.2f} s | warm {enc_warm:.3f} s "
            f"-> speed-up {enc_live / enc_warm:.1f}x"
        )
        C.log(
            f"whole encoding epoch speed-up {live_m / warm_m:.1f}x, cold overhead {cold_t / live_m:.2f}x, "
            f"warm and cold == live bit for bit: {exact}"
        )
        C.log(
            f"cache: {len(cache)} entries, {size / 2**20:.1f} MiB = {size / hours / 2**30:.2f} GiB per audio "
            f"hour; "
            f"hits {cache.stats.hits}"
        )
        C.emit(
            {
                "frozen_encoder_speedup": C.finite(enc_live / enc_warm),
                "warm_speedup": C.finite(live_m / warm_m),
                "cold_overhead": C.finite(cold_t / live_m),
                "epoch_live_s": live_m,
                "epoch_cold_s": cold_t,
                "epoch_warm_s": warm_m,
                "encoders_live_s": enc_live,
                "encoders_warm_s": enc_warm,
                "cache_gib_per_audio_hour": size / hours / 2**30,
                "warm_equals_live": float(exact),
                "quick": args.quick,
                "clips": n,
                "audio_seconds": sum(seconds),
                "device": C.device_info(),
            }
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
