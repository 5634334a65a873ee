"""Model FLOP utilisation of a MoWE train step under bf16 autocast.

Peak: best GEMM throughput of ``torch.matmul`` on square bf16 (and fp32) matrices of a few sizes, with the same
thread count as the step. Achieved: FLOPs of one step (``FlopCounterMode``: forward + backward, CPU attention
included) / median step time. ``train_mfu`` = achieved / bf16 peak.

Step: MoWE with a Whisper-base-shaped strong encoder (frozen, real length), 2 Whisper-tiny + 2 HuBERT-base weak
encoders (top-1, 2 clips each), stack-4 connector, Llama (hidden 512, 4 layers, vocab 8192) with LoRA r=8 on q,v;
batch of 8 equal-length clips (no padding, so every counted FLOP is useful work), 10 s each by default.
"""

from __future__ import annotations

import time

import _common as C
import torch

AUDIO_ID = 5


def gemm_peak(dtype: torch.dtype, sizes: list[int], repeats: int) -> tuple[float, dict]:
    """Best FLOP/s over sizes and repeats of ``a @ b`` (n x n)."""
    best, per = 0.0, {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up (oneDNN primitive creation)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        rate = 2 * n ** 3 / min(ts)
        per[n] = rate / 1e9
        best = max(best, rate)
    return best, per


def main(argv=None) -> dict:
    p = C.parse_quick()
    p.add_argument("--clip-s", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    threads = C.set_threads(args.threads)
    torch.manual_seed(0)
    quick = args.quick
    sizes = [256, 512] if quick else [1024, 2048, 3072]
    peak_bf16, per_bf16 = gemm_peak(torch.bfloat16, sizes, 2 if quick else 4)
    peak_fp32, per_fp32 = gemm_peak(torch.float32, sizes, 2 if quick else 3)
    C.log(f"GEMM peak ({threads} thread(s)): bf16 {peak_bf16 / 1e9:.1f} GFLOP/s "
          f"({', '.join(f'{n}: {r:.0f}' for n, r in per_bf16.items())}), fp32 {peak_fp32 / 1e9:.1f} GFLOP/s "
          f"({', '.join(f'{n}: {r:.0f}' for n, r in per_fp32.items())})")

    n, secs = 8, (0.5 if quick else args.clip_s)
    wav, lens = C.clips([secs] * n)
    llm_cfg = C.llm_config("llama", hidden=512, layers=4, vocab=8192, quick=quick)
    model = C.build_mowe(strong=C.whisper("base", pad_to_30s=False, quick=quick), weak=C.weak_encoders(quick=quick),
                         llm=C.build_llm(llm_cfg), audio_id=AUDIO_ID, assignment=C.balanced_assignment(n, 4))
    ids, am, labels = C.prompts(n, AUDIO_ID, vocab=llm_cfg["vocab_size"])
    step = C.train_step_fn(model, {"input_ids": ids, "waveforms": wav, "wave_lengths": lens, "attention_mask": am,
                                       "labels": labels}, autocast=True)
    model.strong_encoder.eval()
    model.pool.encoders.eval()  # frozen towers: no dropout / layerdrop (repeatable FLOPs and time)
    flops = C.count_flops(step)  # also the warm-up
    repeats = 2 if quick else args.repeats
    times = C.timed_rounds({"step": step}, repeats=repeats, warmup=0)["step"]
    t = C.median(times)
    achieved = flops / t
    res = {
        "quick": quick, "threads": threads, "clips": f"{n} x {secs:g} s", "repeats": repeats,
        "gemm_peak_bf16_gflops": peak_bf16 / 1e9, "gemm_peak_fp32_gflops": peak_fp32 / 1e9,
        "gemm_bf16_gflops_by_size": per_bf16, "gemm_fp32_gflops_by_size": per_fp32,
        "step_gflop": flops / 1e9, "step_s": t, "achieved_gflops": achieved / 1e9,
        "train_mfu": C.finite(achieved / peak_bf16), "train_mfu_vs_fp32_peak": achieved / peak_fp32,
        "autocast": "bf16", "llm": "llama hidden 512 x 4 layers, LoRA r=8 q,v",
    }
    C.log(f"step: {flops / 1e9:.0f} GFLOP in {t:.2f} s -> {achieved / 1e9:.1f} GFLOP/s")
    C.log(f"train_mfu = {res['train_mfu']:.3f} of the bf16 GEMM peak (target >= 0.25); "
          f"{res['train_mfu_vs_fp32_peak']:.3f} of the fp32 peak")
    res.update(C.device_info())
    res["threads"] = threads
    C.emit(res)
    return res


if __name__ == "__main__":
    main()
