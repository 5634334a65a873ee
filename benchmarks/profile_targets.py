"""Where the time goes in the configurations whose targets are missed (not run by ``run_all.py``).

    python benchmarks/profile_targets.py step   # MoWE train step of bench_pool: time and FLOPs per module
    python benchmarks/profile_targets.py e2e    # bench_e2e batch: encoder vs LLM split, top ops of train
    steps python benchmarks/profile_targets.py phases # bench_e2e's 7.5 s proxy batch: generation phase by
    phase

Module times come from forward hooks (forward only; "backward + optimizer" is the remainder of the step);
top ops from ``torch.profiler`` (self CPU time).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import _common as C
import torch
from torch.profiler import ProfilerActivity, profile

AUDIO_ID = 5


def module_times(model, named: dict, fn, repeats: int = 3) -> dict:
    """Median forward time of each module in ``named`` during ``fn()``, plus the whole call."""
    acc: dict = defaultdict(list)
    starts: dict = {}
    hooks = []
    for name, mod in named.items():
        hooks.append(
            mod.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter()))
        )
        hooks.append(
            mod.register_forward_hook(lambda m, a, o, n=name: acc[n].append(time.perf_counter() - starts[n]))
        )
    fn()
    acc.clear()
    totals = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        totals.append(time.perf_counter() - t0)
    for h in hooks:
        h.remove()
    per = {n: C.median(v) * (len(v) // repeats) for n, v in acc.items()}  # per call x calls per step
    per["(whole call)"] = C.median(totals)
    return per


def top_ops(fn, n: int = 10) -> str:
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=n)


def flops_by_module(fn, prefixes: dict) -> dict:
    with C.flop_counter() as c:
        fn()
    counts = c.get_flop_counts()
    out = {}
    for label, key in prefixes.items():
        out[label] = sum(v for k, d in counts.items() if k.endswith(key) for v in d.values())
    out["(whole)"] = c.get_total_flops()
    return out


def profile_step() -> None:
    from bench_pool import freeze_towers_eval

    n = 8
    seconds = C.uniform_seconds(n, 0.25, 2.5, seed=0)
    wav, lens = C.clips(seconds)
    llm_cfg = C.llm_config("llama", hidden=512, layers=4, vocab=8192, quick=False)
    model = C.build_mowe(
        strong=C.whisper("base", pad_to_30s=False, quick=False),
        weak=C.weak_encoders(quick=False),
        llm=C.build_llm(llm_cfg),
        audio_id=AUDIO_ID,
        assignment=C.balanced_assignment(n, 4),
    )
    ids, am, labels = C.prompts(n, AUDIO_ID, vocab=llm_cfg["vocab_size"])
    step = C.train_step_fn(
        model,
        {"input_ids": ids, "waveforms": wav, "wave_lengths": lens, "attention_mask": am, "labels": labels},
    )
    freeze_towers_eval(model)
    named = {
        "strong_encoder": model.strong_encoder,
        "router": model.router,
        "connector": model.connector,
        "llm": model.llm,
        **{f"weak.{k}": e for k, e in model.weak_encoders.encoders.items()},
    }
    times = module_times(model, named, step)
    fl = flops_by_module(
        step,
        {
            "strong_encoder": "strong_encoder",
            "connector": "connector",
            "llm": "llm",
            **{f"weak.{k}": f"encoders.{k}" for k in model.weak_encoders.encoders},
        },
    )
    print("MoWE train step (bench_pool batch): forward time and FLOPs (fwd+bwd) per module")
    fwd = sum(v for k, v in times.items() if not k.startswith("("))
    for k in list(named) + ["(whole call)"]:
        t = times.get(k, float("nan"))
        f = fl.get(k, fl["(whole)"] if k == "(whole call)" else 0)
        print(f"  {k:24s} {t * 1e3:8.0f} ms  {f / 1e9:8.1f} GFLOP  {f / max(t, 1e-9) / 1e9:6.1f} GFLOP/s")
    print(f"  {'backward + optimizer':24s} {(times['(whole call)'] - fwd) * 1e3:8.0f} ms")
    print(top_ops(step))


def profile_e2e() -> None:
    import bench_e2e as E

    from mowe.encoders import WhisperEncoder

    n, window = 8, 7.5
    seconds = C.uniform_seconds(n, window / 30, window, seed=0)
    wav, lens = C.clips(seconds)
    enc_kw = {
        "d_model": 512,
        "encoder_layers": 6,
        "encoder_attention_heads": 8,
        "encoder_ffn_dim": 2048,
        "num_mel_bins": 128,
        "max_source_positions": int(window * 50),
    }
    text_cfg = C.llm_config("qwen2", hidden=512, layers=4, vocab=8192, quick=False)
    qwen = E.build_qwen2audio(enc_kw, text_cfg)
    mowe = C.build_mowe(
        strong=WhisperEncoder.from_preset("base", pad_to_30s=False, **enc_kw),
        weak=None,
        llm=C.build_llm(text_cfg),
        audio_id=AUDIO_ID,
        stack=2,
    )
    qf, qm, qn = E.qwen_inputs(wav, lens, n_mels=128, window_s=window, vocab=8192)
    q_ids, q_am, q_lab = C.prompts(n, AUDIO_ID, vocab=8192, audio_tokens=qn)
    m_ids, m_am, m_lab = C.prompts(n, AUDIO_ID, vocab=8192)
    gen = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False}
    qwen.eval()
    mowe.eval()
    with torch.no_grad():
        qt = module_times(
            qwen,
            {"audio_tower": qwen.model.audio_tower, "language_model": qwen.model.language_model},
            lambda: qwen.generate(
                input_ids=q_ids[:, :-8],
                attention_mask=q_am[:, :-8],
                input_features=qf,
                feature_attention_mask=qm,
                **gen,
            ),
        )
        mt = module_times(
            mowe,
            {"strong_encoder": mowe.strong_encoder, "llm": mowe.llm.base_model.model.model},
            lambda: mowe.generate(m_ids[:, :14], wav, lens, attention_mask=m_am[:, :14], **gen),
        )
    print("greedy generation, 16 new tokens (forward time per module, summed over calls):")
    for name, d in (("Qwen2-Audio", qt), ("mowe base-only, real length", mt)):
        print(f"  {name}: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in d.items()))
    qwen.train()
    mowe.train()
    mowe.strong_encoder.eval()
    print("train step forward + backward, Qwen2-Audio:")
    print(
        top_ops(
            lambda: qwen(
                input_ids=q_ids,
                attention_mask=q_am,
                input_features=qf,
                feature_attention_mask=qm,
                labels=q_lab,
            ).loss.backward()
        )
    )
    print("train step forward + backward, mowe base-only (real length):")
    print(top_ops(lambda: mowe(m_ids, wav, lens, attention_mask=m_am, labels=m_lab).loss.backward()))


def profile_phases() -> None:
    """Greedy generation of 16 tokens on bench_e2e's 7.5 s proxy batch, phase by phase (RESULTS.md's
    table)."""
    import bench_e2e as E

    from mowe.encoders import WhisperEncoder
    from mowe.generation import greedy_settings, grouped_greedy_generate
    from mowe.tensors import resolve_bucket_padding

    n, window = 8, 7.5
    enc_kw = {
        "d_model": 512,
        "encoder_layers": 6,
        "encoder_attention_heads": 8,
        "encoder_ffn_dim": 2048,
        "num_mel_bins": 128,
        "max_source_positions": int(window * 50),
    }
    text_cfg = C.llm_config("qwen2", hidden=512, layers=4, vocab=8192, quick=False)
    qwen = E.build_qwen2audio(enc_kw, text_cfg).eval()
    mowe = C.build_mowe(
        strong=WhisperEncoder.from_preset("base", pad_to_30s=False, **enc_kw),
        weak=None,
        llm=C.build_llm(text_cfg),
        audio_id=AUDIO_ID,
        stack=2,
    ).eval()
    b = E.Batch(C.uniform_seconds(n, window / 30, window, seed=0), window=window, vocab=8192)
    gen = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False, "num_beams": 1}
    one = dict(gen, max_new_tokens=1, min_new_tokens=1)
    with torch.no_grad():
        audio = mowe.encode_audio(b.wav, b.lens)
        merged = mowe._merge(b.m_gen_ids, b.m_gen_am, audio, None, "left")
        first = greedy_settings(mowe.llm, pad_token_id=text_cfg["pad_token_id"], **one)
        budget = resolve_bucket_padding("auto", merged.inputs_embeds.device)
        q_kw = {
            "input_ids": b.q_gen_ids,
            "attention_mask": b.q_gen_am,
            "input_features": b.q_feats,
            "feature_attention_mask": b.q_fmask,
        }
        fns = {
            "Qwen2-Audio whole call": lambda: qwen.generate(**q_kw, **gen),
            "Qwen2-Audio 1-token call": lambda: qwen.generate(**q_kw, **one),
            "Qwen2-Audio audio tower": lambda: qwen.model.audio_tower(b.q_feats),
            "mowe whole call": lambda: mowe.generate(
                b.m_gen_ids, b.wav, b.lens, attention_mask=b.m_gen_am, **gen
            ),
            "mowe encode_audio": lambda: mowe.encode_audio(b.wav, b.lens),
            "mowe generate, audio given": lambda: mowe.generate(
                b.m_gen_ids, b.wav, b.lens, attention_mask=b.m_gen_am, audio=audio, **gen
            ),
            "mowe prefill, length groups": lambda: grouped_greedy_generate(
                mowe.llm, merged, first, max_padding=budget
            ),
            "mowe prefill, one padded batch": lambda: mowe.llm.generate(
                inputs_embeds=merged.inputs_embeds,
                attention_mask=merged.attention_mask,
                pad_token_id=text_cfg["pad_token_id"],
                **one,
            ),
        }
        times = C.timed_rounds(fns, repeats=3)
    print(
        f"greedy generation of 16 tokens, bench_e2e's 7.5 s proxy batch ({b.audio_s:.1f} s of audio); "
        "median of 3 interleaved rounds:"
    )
    for k, v in times.items():
        print(f"  {k:32s} {C.median(v) * 1e3:8.0f} ms")
    print(
        "Prefill of Qwen2-Audio = its 1-token call - its tower; decode steps = whole call - 1-token call "
        "(mowe: generate with audio given - its prefill)."
    )


if __name__ == "__main__":
    C.set_threads(None)
    torch.manual_seed(0)
    what = sys.argv[1] if len(sys.argv) > 1 else "step"
    {"step": profile_step, "e2e": profile_e2e, "phases": profile_phases}[what]()
