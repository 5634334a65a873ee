"""Peak memory of a train step in the MoWE-Audio paper configuration.

Whisper-large-v3-shaped strong encoder (frozen) + 2 Whisper-tiny + 2 HuBERT-base weak encoders (top-1) + a
stack-4 connector + an LLM with LoRA r=8 on q,v; batch of 2 x 10 s clips; forward + backward + AdamW step.

CPU (this machine): the LLM is small (Llama hidden 1024, 4 layers) and the strong encoder runs at real length
(``pad_to_30s=False``; the padded path adds only no-grad activations of one layer at a time, (2, 1500, 5120)
floats ~ 60 MB, as the frozen encoder keeps nothing for backward). Each measurement runs in a fresh subprocess
and reads ``ru_maxrss`` (a high-water mark, so peaks never carry over): ``peak_mem_gib`` is the whole
process's peak (weights + activations + gradients + optimizer state); ``step_delta_gib`` its rise over the
resident size right before the step.

CUDA (not run here): the same at full size (Llama-2-7B-shaped LLM in bf16, strong encoder padded to 30 s,
bf16), ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import _common as C
import torch

AUDIO_ID = 5
GIB = 1024**3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(mode: str, quick: bool) -> dict:
    """Build one model and run one train step; return memory figures (runs in its own process)."""
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    if quick:
        strong = C.whisper("base", pad_to_30s=False, quick=True)
        llm_cfg = C.llm_config("llama", hidden=64, layers=2, vocab=256, quick=True)
        secs = 0.5
    elif cuda:
        strong = C.whisper("large-v3", pad_to_30s=True, quick=False).to(torch.bfloat16)
        llm_cfg = C.llm_config("llama", hidden=4096, layers=32, vocab=32000, quick=False, heads=32)
        llm_cfg["intermediate_size"] = 11008
        secs = 10.0
    else:
        strong = C.whisper("large-v3", pad_to_30s=False, quick=False)
        llm_cfg = C.llm_config("llama", hidden=1024, layers=4, vocab=32000, quick=False)
        secs = 10.0
    weak = C.weak_encoders(quick=quick) if mode == "mowe" else None
    llm = C.build_llm(llm_cfg)
    if cuda:
        llm = llm.to(torch.bfloat16)
    model = C.build_mowe(
        strong=strong, weak=weak, llm=llm, audio_id=AUDIO_ID, assignment=[0, 2] if weak else None
    ).to(dev)
    wav, lens = C.clips([secs, secs * 0.8])
    ids, am, labels = C.prompts(2, AUDIO_ID, vocab=llm_cfg["vocab_size"])
    batch = {
        k: v.to(dev)
        for k, v in {
            "input_ids": ids,
            "waveforms": wav,
            "wave_lengths": lens,
            "attention_mask": am,
            "labels": labels,
        }.items()
    }
    step = C.train_step_fn(model, batch, autocast=cuda)
    model.strong_encoder.eval()
    if model.weak_encoders is not None:
        model.weak_encoders.encoders.eval()
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {
            "peak_bytes": peak,
            "before_bytes": before,
            "params": n_params,
            "trainable": n_train,
            "llm": llm_cfg,
            "secs": secs,
            "backend": "cuda max_memory_allocated",
        }
    before = rss_bytes()
    step()
    return {
        "peak_bytes": maxrss_bytes(),
        "before_bytes": before,
        "params": n_params,
        "trainable": n_train,
        "llm": {k: llm_cfg[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        "secs": secs,
        "backend": "ru_maxrss (fresh process)",
    }


def measure(mode: str, quick: bool, threads: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode] + (["--quick"] if quick else [])
    if threads is not None:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {mode!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = C.parse_quick()
    p.add_argument("--child", choices=["mowe", "base"], default=None, help=argparse_hidden())
    args = p.parse_args(argv)
    threads = C.set_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.quick)), flush=True)
        return {}
    res: dict = {"quick": args.quick, "threads": threads}
    # --quick (the smoke test) skips the base-only comparison: each child pays the transformers import.
    for mode in ("mowe",) if args.quick else ("mowe", "base"):
        r = measure(mode, args.quick, args.threads)
        res[f"{mode}_peak_gib"] = r["peak_bytes"] / GIB
        res[f"{mode}_step_delta_gib"] = (r["peak_bytes"] - r["before_bytes"]) / GIB
        res[f"{mode}_params_m"] = r["params"] / 1e6
        res[f"{mode}_trainable_m"] = r["trainable"] / 1e6
        res["backend"], res["llm"], res["clip_seconds"] = r["backend"], r["llm"], [r["secs"], r["secs"] * 0.8]
        C.log(
            f"  {mode:5s}: peak {r['peak_bytes'] / GIB:6.2f} GiB (step adds "
            f"{res[f'{mode}_step_delta_gib']:.2f} GiB "
            f"over {r['before_bytes'] / GIB:.2f} GiB resident); {r['params'] / 1e6:.0f} M params, "
            f"{r['trainable'] / 1e6:.2f} M trainable"
        )
    res["peak_mem_gib"] = C.finite(res["mowe_peak_gib"])
    res["step_delta_gib"] = res["mowe_step_delta_gib"]
    res["config"] = (
        "strong whisper-large-v3-shaped frozen (pad_to_30s=False on CPU), 2 whisper-tiny + 2 "
        "hubert-base weak (top-1), stack-4 connector, llama + LoRA r=8 q,v, batch 2 x (10, 8) s"
    )
    C.log(f"peak_mem_gib = {res['peak_mem_gib']:.2f} (MoWE paper configuration, CPU-sized LLM)")
    res.update(C.device_info())
    res["threads"] = threads
    C.emit(res)
    return res


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
