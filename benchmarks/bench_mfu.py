"""Model FLOP utilisation of a MoWE train step under bf16 autocast, with the achieved FLOP/s beside the ratio.

Peak: the best GEMM throughput of ``torch.matmul`` on square bf16 (and fp32) matrices of several sizes (large
ones
included: small GEMMs under-state the peak), each size timed in several trials of back-to-back products
lasting at least ``min_time`` seconds, keeping the best trial (a shared machine only ever slows a trial down).
Same thread count as the step. On a GPU the documented dense bf16 peak of the device
(:data:`DOCUMENTED_PEAK_TFLOPS`) is
reported beside the measured one. Achieved: FLOPs of one step (``FlopCounterMode``: forward + backward, CPU
attention included) / median step time. ``train_mfu`` = achieved / measured bf16 peak.

Step: MoWE with a Whisper-base-shaped strong encoder (frozen, real length), 2 Whisper-tiny + 2 HuBERT-base
weak encoders (top-1, 2 clips each), stack-4 connector, Llama (hidden 512, 4 layers, vocab 8192) with LoRA r=8
on q,v; batch of 8 equal-length clips (no padding, so every counted FLOP is useful work), 10 s each by
default. The step runs on the CPU; the paper-size step on a GPU is benchmarks/gpu_paper_size.py.
"""

from __future__ import annotations

import time

import _common as C
import torch

AUDIO_ID = 5

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; matched by substring of
# torch.cuda.get_device_name(), first match wins (so "H100 PCIe" is listed before "H100").
DOCUMENTED_PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
)


def documented_peak_tflops(name: str) -> float | None:
    """The data-sheet dense bf16 peak of a device name (None when it is not in the table)."""
    for key, tflops in DOCUMENTED_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak(
    dtype: torch.dtype,
    sizes: list[int],
    trials: int,
    *,
    min_time: float = 0.2,
    device: torch.device | str = "cpu",
) -> tuple[float, dict]:
    """Best FLOP/s of ``a @ b`` (n x n) over ``sizes``; per size the best of ``trials`` trials, each a run of
    back-to-back products lasting at least ``min_time`` s (so timer resolution and one-off stalls do not
       count)."""
    device = torch.device(device)
    best, per = 0.0, {}
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        a @ b  # warm-up (oneDNN primitive / cuBLAS handle creation)
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        reps = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))
        rates = []
        for _ in range(trials):
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            rates.append(2 * n**3 * reps / (time.perf_counter() - t0))
        per[n] = max(rates) / 1e9
        best = max(best, max(rates))
    return best, per


def main(argv=None) -> dict:
    p = C.parse_quick()
    p.add_argument("--clip-s", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=5, help="GEMM timing trials per size (the best one counts)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of back-to-back GEMMs per trial")
    args = p.parse_args(argv)
    threads = C.set_threads(args.threads)
    torch.manual_seed(0)
    quick = args.quick
    sizes = [256, 512] if quick else [1024, 2048, 3072, 4096]
    trials, min_time = (2, 0.02) if quick else (args.trials, args.min_time)
    peak_bf16, per_bf16 = gemm_peak(torch.bfloat16, sizes, trials, min_time=min_time)
    peak_fp32, per_fp32 = gemm_peak(torch.float32, sizes, trials, min_time=min_time)
    C.log(
        f"GEMM peak ({threads} thread(s), best of {trials} trials >= {min_time:g} s per size): bf16 "
        f"{peak_bf16 / 1e9:.1f} GFLOP/s ({', '.join(f'{n}: {r:.0f}' for n, r in per_bf16.items())}), fp32 "
        f"{peak_fp32 / 1e9:.1f} GFLOP/s ({', '.join(f'{n}: {r:.0f}' for n, r in per_fp32.items())})"
    )
    gpu = {}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        big = [4096, 8192] if quick else [4096, 8192, 16384]
        measured, _ = gemm_peak(torch.bfloat16, big, trials, min_time=min_time, device="cuda")
        doc = documented_peak_tflops(name)
        gpu = {
            "gpu_name": name,
            "gpu_gemm_peak_bf16_tflops": measured / 1e12,
            "gpu_documented_peak_bf16_tflops": doc,
            "gpu_gemm_peak_vs_documented": C.finite(measured / 1e12 / doc) if doc else None,
        }
        C.log(f"GPU {name}: bf16 GEMM {measured / 1e12:.0f} TFLOP/s measured, documented {doc} TFLOP/s")

    n, secs = 8, (0.5 if quick else args.clip_s)
    wav, lens = C.clips([secs] * n)
    llm_cfg = C.llm_config("llama", hidden=512, layers=4, vocab=8192, quick=quick)
    model = C.build_mowe(
        strong=C.whisper("base", pad_to_30s=False, quick=quick),
        weak=C.weak_encoders(quick=quick),
        llm=C.build_llm(llm_cfg),
        audio_id=AUDIO_ID,
        assignment=C.balanced_assignment(n, 4),
    )
    ids, am, labels = C.prompts(n, AUDIO_ID, vocab=llm_cfg["vocab_size"])
    step = C.train_step_fn(
        model,
        {"input_ids": ids, "waveforms": wav, "wave_lengths": lens, "attention_mask": am, "labels": labels},
        autocast=True,
    )
    model.strong_encoder.eval()
    model.weak_encoders.encoders.eval()  # frozen towers: no dropout / layerdrop (repeatable FLOPs and time)
    flops = C.count_flops(step)  # also the warm-up
    repeats = 2 if quick else args.repeats
    times = C.timed_rounds({"step": step}, repeats=repeats, warmup=0)["step"]
    t = C.median(times)
    achieved = flops / t
    res = {
        "quick": quick,
        "threads": threads,
        "clips": f"{n} x {secs:g} s",
        "repeats": repeats,
        "gemm_peak_bf16_gflops": peak_bf16 / 1e9,
        "gemm_peak_fp32_gflops": peak_fp32 / 1e9,
        "gemm_bf16_gflops_by_size": per_bf16,
        "gemm_fp32_gflops_by_size": per_fp32,
        "step_gflop": flops / 1e9,
        "step_s": t,
        "achieved_gflops": achieved / 1e9,
        "gemm_trials": trials,
        "gemm_min_time_s": min_time,
        "gemm_sizes": sizes,
        **gpu,
        "train_mfu": C.finite(achieved / peak_bf16),
        "train_mfu_vs_fp32_peak": achieved / peak_fp32,
        "autocast": "bf16",
        "llm": "llama hidden 512 x 4 layers, LoRA r=8 q,v",
    }
    C.log(f"step: {flops / 1e9:.0f} GFLOP in {t:.2f} s -> {achieved / 1e9:.1f} GFLOP/s")
    C.log(
        f"train_mfu = {res['train_mfu']:.3f} (achieved {achieved / 1e9:.1f} GFLOP/s / bf16 GEMM peak "
        f"{peak_bf16 / 1e9:.1f} GFLOP/s; target >= 0.25); {res['train_mfu_vs_fp32_peak']:.3f} of the fp32 "
        f"peak "
        f"({peak_fp32 / 1e9:.1f} GFLOP/s)"
    )
    res.update(C.device_info())
    res["threads"] = threads
    C.emit(res)
    return res


if __name__ == "__main__":
    main()
