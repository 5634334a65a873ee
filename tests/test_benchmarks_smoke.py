"""Each benchmark script runs with --quick and ends with one JSON line holding its keys as finite numbers.

No timing assertions: the scripts measure speed; here we only check that they run and report.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

EXPECTED = {
    "bench_encoders.py": [
        "whisper_var_len_speedup_5s",
        "whisper_var_len_speedup_5s_bf16",
        "whisper_var_len_speedup_5s_b4",
        "flop_ratio_b1",
    ],
    "bench_pool.py": [
        "sparse_vs_dense_speedup",
        "mowe_step_overhead",
        "weak_flop_share",
        "mowe_step_flop_ratio",
        "sparse_dense_max_abs_diff",
        "mowe_step_overhead_strong_base",
        "weak_flop_share_strong_base",
    ],
    "bench_e2e.py": [
        "infer_speedup_vs_qwen2audio",
        "train_speedup_vs_qwen2audio",
        "infer_speedup_vs_qwen2audio_pad30",
        "infer_speedup_vs_qwen2audio_mowe",
        "infer_speedup_vs_qwen2audio_short",
        "infer_speedup_vs_qwen2audio_onebatch",
        "infer_speedup_vs_qwen2audio_stack4",
        "infer_speedup_vs_qwen2audio_dataset",
        "infer_speedup_vs_qwen2audio_padded_llm",
        "train_speedup_vs_qwen2audio_pad30",
        "train_speedup_vs_qwen2audio_onebatch",
        "train_speedup_vs_qwen2audio_padded_llm",
        "train_speedup_vs_qwen2audio_dataset",
    ],
    "bench_mfu.py": ["train_mfu", "gemm_peak_bf16_gflops", "gemm_peak_fp32_gflops", "step_gflop"],
    "bench_memory.py": ["peak_mem_gib", "step_delta_gib"],
    "bench_serve.py": [
        "serve_throughput_ratio_c8",
        "serve_throughput_ratio_c32",
        "serve_p50_s_c8",
        "serve_p99_s_c8",
        "serve_p50_s_seq",
        "serve_p99_s_c32",
    ],
    "bench_long_audio.py": [
        "long_audio_cost_ratio",
        "long_audio_rss_growth_mb",
        "long_audio_s_per_min_1",
        "long_audio_peak_rss_mb_1",
        "whole_decode_mb",
        "stream_decode_mb",
    ],
    "bench_cache.py": [
        "frozen_encoder_speedup",
        "warm_speedup",
        "cold_overhead",
        "cache_gib_per_audio_hour",
        "warm_equals_live",
    ],
    "bench_data.py": ["hf_index_ratio", "hf_read_ratio", "stream_skip_ratio", "hf_equals_manifest"],
}


# Differences between two separately measured figures: the sign is the measurement's (two fresh processes'
# peak RSS differ by tens of MB either way), so only finiteness is checked.
SIGNED = {"long_audio_rss_growth_mb"}


@functools.cache
def _run(script: str) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(BENCH),
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-3000:]}"
    last = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1]
    return json.loads(last)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_run_reports_its_keys(script):
    res = _run(script)
    for key in EXPECTED[script] + ["device"]:
        assert key in res, f"{script}: key {key!r} missing from {sorted(res)}"
    for key in EXPECTED[script]:
        v = res[key]
        assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (script, key, v)
        if key not in SIGNED:
            assert v >= 0, (script, key, v)
    assert res["quick"] is True


def test_pool_sparse_equals_dense():
    """The sparse pool and the run-all-then-mask baseline give the same features (so the speedup is like for
    like)."""
    assert _run("bench_pool.py")["sparse_dense_max_abs_diff"] < 1e-3


def test_dataset_clips_equal_the_manifests():
    """bench_data compares like for like: the dataset's decoded clips are the manifest's, bit for bit."""
    assert _run("bench_data.py")["hf_equals_manifest"] == 1.0


def test_every_script_is_covered():
    scripts = sorted(f for f in os.listdir(BENCH) if f.startswith("bench_") and f.endswith(".py"))
    assert scripts == sorted(EXPECTED)


def test_run_all_keeps_text_outside_markers(tmp_path, monkeypatch):
    sys.path.insert(0, BENCH)
    try:
        import run_all
    finally:
        sys.path.remove(BENCH)
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# title\n\nintro\n\n{run_all.BEGIN}\nold\n{run_all.END}\n\n## Analysis\n\nkeep me\n")
    run_all.write_results_md(str(md), "new table")
    text = md.read_text()
    assert "keep me" in text and "intro" in text and "new table" in text and "old" not in text
    fresh = tmp_path / "NEW.md"
    run_all.write_results_md(str(fresh), "table")
    assert run_all.BEGIN in fresh.read_text() and "table" in fresh.read_text()


def test_run_all_runs_e2e_at_the_real_window_and_the_proxy_and_keeps_their_keys_apart():
    sys.path.insert(0, BENCH)
    try:
        import run_all
    finally:
        sys.path.remove(BENCH)
    full = run_all.runs("bench_e2e.py", quick=False)
    assert [args for _, args in full][0] == []  # the targets come from the default (30 s) run
    assert "--key-suffix" in full[1][1] and len({label for label, _ in full}) == 2
    assert run_all.runs("bench_e2e.py", quick=True) == [("bench_e2e.py", [])]
    assert run_all.runs("bench_pool.py", quick=False) == [("bench_pool.py", [])]
    # The second run's JSON keys carry the suffix (device facts excepted), so they do not overwrite the
    # first's.
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "bench_e2e.py"), "--quick", "--key-suffix", "_x"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(BENCH),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])
    assert (
        "infer_speedup_vs_qwen2audio_x" in res
        and "infer_speedup_vs_qwen2audio" not in res
        and "device" in res
    )


def test_cache_bench_warm_and_cold_epochs_equal_live():
    """The cached epochs give the live epoch's audio tokens bit for bit (so the speed-up is like for like)."""
    assert _run("bench_cache.py")["warm_equals_live"] == 1.0


def test_long_audio_bench_streams_in_less_memory_than_whole_decoding():
    """Decoding a 44.1 kHz stereo file window by window holds less than decoding it whole (so the figures
    compare like with like: the same file, the same samples)."""
    res = _run("bench_long_audio.py")
    assert res["stream_decode_mb"] < res["whole_decode_mb"]
