"""Run every ``benchmarks/bench_*.py`` in its own process, collect their last-line JSON, write
``results.json`` and regenerate the automatic section of ``RESULTS.md`` (between ``<!-- BEGIN AUTO -->`` and
   ``<!-- END AUTO -->``;
text outside the markers is kept).

    python benchmarks/run_all.py            # the real run (~20 minutes on a 2-core CPU)
    python benchmarks/run_all.py --quick    # tiny sizes, seconds each (results go to results_quick.json only)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- BEGIN AUTO -->", "<!-- END AUTO -->"

# key -> (human target, check(value, all results) -> bool)
TARGETS = {
    "whisper_var_len_speedup_5s": (">= 4", lambda v, r: v >= 4),
    "sparse_vs_dense_speedup": (">= 2.5", lambda v, r: v >= 2.5),
    "mowe_step_overhead": (
        "<= 1 + weak_flop_share + 0.10",
        lambda v, r: v <= 1 + r.get("weak_flop_share", float("nan")) + 0.10,
    ),
    "infer_speedup_vs_qwen2audio": (">= 2", lambda v, r: v >= 2),
    "train_speedup_vs_qwen2audio": (">= 1.5", lambda v, r: v >= 1.5),
    "train_mfu": (">= 0.25", lambda v, r: v >= 0.25),
    "serve_throughput_ratio_c8": (">= 3", lambda v, r: v >= 3),
    "frozen_encoder_speedup": (">= 5", lambda v, r: v >= 5),
    "long_audio_cost_ratio": ("<= 1.2", lambda v, r: v <= 1.2),
    "long_audio_rss_growth_mb": ("<= 1024", lambda v, r: v <= 1024),
}
# Reported beside the targets (context, no target of their own).
CONTEXT = [
    "whisper_var_len_speedup_5s_bf16",
    "whisper_var_len_speedup_5s_b4",
    "weak_flop_share",
    "mowe_step_flop_ratio",
    "mowe_step_overhead_strong_base",
    "weak_flop_share_strong_base",
    "mowe_step_flop_ratio_strong_base",
    "sparse_vs_dense_flop_ratio",
    *[
        f"{k}{w}"
        for w in ("", "_w7.5")
        for k in (
            "infer_speedup_vs_qwen2audio_padded_llm",
            "infer_speedup_vs_qwen2audio_onebatch",
            "infer_speedup_vs_qwen2audio_pad30",
            "infer_speedup_vs_qwen2audio_stack4",
            "infer_speedup_vs_qwen2audio_mowe",
            "infer_speedup_vs_qwen2audio_short",
            "train_speedup_vs_qwen2audio_padded_llm",
            "train_speedup_vs_qwen2audio_onebatch",
            "train_speedup_vs_qwen2audio_pad30",
            "train_speedup_vs_qwen2audio_stack4",
        )
    ],
    "infer_speedup_vs_qwen2audio_w7.5",
    "train_speedup_vs_qwen2audio_w7.5",
    "infer_speedup_vs_qwen2audio_dataset_w7.5",
    "train_speedup_vs_qwen2audio_dataset_w7.5",
    "achieved_gflops",
    "gemm_peak_bf16_gflops",
    "gemm_peak_fp32_gflops",
    "peak_mem_gib",
    "step_delta_gib",
    "serve_throughput_ratio_c32",
    "serve_p50_s_seq",
    "serve_p99_s_seq",
    "serve_p50_s_c8",
    "serve_p99_s_c8",
    "serve_p50_s_c32",
    "serve_p99_s_c32",
    "warm_speedup",
    "cold_overhead",
    "cache_gib_per_audio_hour",
    "warm_equals_live",
    "long_audio_s_per_min_1",
    "long_audio_s_per_min_5",
    "long_audio_s_per_min_15",
    "long_audio_s_per_min_60",
    "long_audio_peak_rss_mb_1",
    "long_audio_peak_rss_mb_60",
    "whole_encode_rss_growth_mb",
    "whole_decode_mb",
    "stream_decode_mb",
]


# Scripts that run more than once, with the arguments of each run (its results are listed under "name args").
# bench_e2e: the real 30 s window for the targets, then the 4x cheaper 7.5 s proxy and the data set.
EXTRA_RUNS = {"bench_e2e.py": [[], ["--window-s", "7.5", "--dataset-clips", "32", "--key-suffix", "_w7.5"]]}


def scripts() -> list[str]:
    order = ["bench_encoders.py", "bench_pool.py", "bench_e2e.py", "bench_mfu.py", "bench_memory.py"]
    found = sorted(f for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py"))
    return [f for f in order if f in found] + [f for f in found if f not in order]


def runs(script: str, quick: bool) -> list[tuple[str, list[str]]]:
    """(label, extra arguments) of each run of ``script``; a smoke run runs each script once."""
    variants = [[]] if quick else EXTRA_RUNS.get(script, [[]])
    return [(" ".join([script, *v]), v) for v in variants]


def run(script: str, extra: list[str]) -> tuple[dict | None, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, script), *extra],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(HERE),
        check=False,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    for ln in lines[:-1]:
        print(f"    {ln}")
    if proc.returncode != 0 or not lines:
        return None, wall, (proc.stderr or "")[-2000:]
    try:
        return json.loads(lines[-1]), wall, ""
    except json.JSONDecodeError as e:
        return None, wall, f"last line is not JSON: {e}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(HERE),
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def auto_section(results: dict, meta: dict) -> str:
    flat: dict = {}
    for r in results.values():
        if r:
            flat.update({k: v for k, v in r.items()})
    lines = [
        f"Generated by `benchmarks/run_all.py` on {meta['date']} at commit `{meta['commit']}`.",
        "",
        (
            f"Machine: {meta['platform']}, {meta['cpu_count']} CPU(s) ({meta['device']}), torch "
            f"{meta['torch']}, "
            f"{meta['threads']} intra-op thread(s), 1-min load average at start {meta['load_avg_1m']}."
        ),
        "",
        "| key | value | target | met |",
        "|---|---|---|---|",
    ]
    for key, (target, check) in TARGETS.items():
        if key in flat:
            v = flat[key]
            ok = bool(check(v, flat))
            lines.append(f"| `{key}` | {fmt(v)} | {target} | {'met' if ok else '**missed**'} |")
        else:
            lines.append(f"| `{key}` | (not run) | {target} | - |")
    lines += ["", "Context (no target):", "", "| key | value |", "|---|---|"]
    for key in CONTEXT:
        if key in flat:
            lines.append(f"| `{key}` | {fmt(flat[key])} |")
    lines += ["", "Per script (wall time, settings):", ""]
    for name, r in results.items():
        if r is None:
            lines.append(f"- `{name}`: **failed** (see the run's output)")
            continue
        settings = {
            k: r[k]
            for k in (
                "clip_seconds",
                "time_scale",
                "window_s",
                "clips",
                "repeats",
                "threads",
                "max_new_tokens",
                "training",
                "config",
                "mowe_llm_layout",
                "window_s_w7.5",
                "mowe_llm_layout_w7.5",
            )
            if k in r
        }
        lines.append(
            f"- `{name}` ({meta['walls'][name]:.0f} s): "
            + "; ".join(f"{k}={fmt(v)}" for k, v in settings.items())
        )
    lines.append("")
    lines.append("Raw numbers: `benchmarks/results.json`.")
    return "\n".join(lines)


def write_results_md(path: str, section: str) -> None:
    header = (
        "# mowe benchmark results\n\nSpeed and memory measured by the scripts in `benchmarks/` "
        "(`make bench`). The section between the markers is regenerated on every run; the analysis below "
        "it is written by hand.\n\n"
    )
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = header + f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    with open(path + ".tmp", "w") as f:
        f.write(f"{pre}{BEGIN}\n{section}\n{END}{post}")
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pass --quick to every script (smoke run)")
    p.add_argument("--threads", type=int, default=None, help="pass --threads to every script")
    p.add_argument("--only", nargs="*", default=None, help="script names to run (default: all)")
    args = p.parse_args(argv)
    extra = (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
    results: dict = {}
    walls: dict = {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for s in scripts():
        if args.only and s not in args.only and s.removesuffix(".py") not in args.only:
            continue
        for label, own in runs(s, args.quick):
            print(f"== {label} {' '.join(extra)}", flush=True)
            r, wall, err = run(s, own + extra)
            walls[label] = wall
            results[label] = r
            print(f"   {'ok' if r else 'FAILED'} in {wall:.0f} s", flush=True)
            if err:
                print(err, file=sys.stderr)
    any_r = next((r for r in results.values() if r), {})
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": any_r.get("torch", "?"),
        "device": any_r.get("device", "?"),
        "threads": any_r.get("threads", "?"),
        "load_avg_1m": round(load, 2),
        "walls": walls,
        "quick": args.quick,
    }
    out = {"meta": meta, "results": results}
    name = "results_quick.json" if args.quick else "results.json"
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    if not args.quick:  # a smoke run must not overwrite the real numbers
        write_results_md(os.path.join(HERE, "RESULTS.md"), auto_section(results, meta))
    print(f"wrote benchmarks/{name}" + ("" if args.quick else " and benchmarks/RESULTS.md"))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
