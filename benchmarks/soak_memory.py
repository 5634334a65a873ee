"""Soak test: train the tiny MoWE model for thousands of steps and watch resident memory (issue 7).

A leak (tensors kept in a Python list, autograd graphs held by logged losses, a growing cache) shows up
as RSS that keeps climbing after warm-up. Prints RSS every ``--every`` steps and, as its last line, a JSON
object with ``rss_start_mib`` (after warm-up), ``rss_end_mib``, ``growth`` and ``steps``.

    python benchmarks/soak_memory.py --steps 3000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--every", type=int, default=250)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    from conftest import make_batch, tiny_config

    from mowe import MoWEAudioLLM

    model = MoWEAudioLLM.from_config(tiny_config(top_k=2))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []  # kept as floats, the way a logger would
    start = None
    t0 = time.time()
    for step in range(1, args.steps + 1):
        wav, wl, ids, am, labels = make_batch(seed=step % 17)
        out = model(ids, wav, wl, attention_mask=am, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if step == args.warmup:
            start = rss_mib()
        if step % args.every == 0:
            print(
                f"step {step:5d}  loss {sum(losses[-50:]) / 50:.3f}  rss {rss_mib():7.1f} MiB  "
                f"{(time.time() - t0) / step * 1000:.0f} ms/step",
                flush=True,
            )
    end = rss_mib()
    print(
        json.dumps(
            {
                "steps": args.steps,
                "warmup": args.warmup,
                "rss_start_mib": round(start, 1),
                "rss_end_mib": round(end, 1),
                "growth": round(end / start - 1, 4),
                "device": platform.processor() or platform.machine(),
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
