"""Shared pieces of the benchmark scripts: timing, FLOP counting, device description, model builders.

Every script prints human-readable lines and, as its last line, one JSON object (see :func:`emit`).

Timing on a shared, noisy CPU: the variants being compared run *interleaved* in one process
(A, B, B, A, A, B, ... so slow drift hits both alike), after a warm-up, and ratios are the median of the
per-round ratios (each round times every variant once), which is steadier than a ratio of medians when the
machine's speed changes between rounds.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils import flop_counter as fc

SR = 16_000

# Tiny sizes for --quick (the smoke test): structure as the full run, compute negligible.
QUICK_WHISPER = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128}
QUICK_WEAK_WHISPER = {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64}
QUICK_HUBERT = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
QUICK_LLM = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


# ---------------------------------------------------------------------------------------------- reporting
def device_info() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu: {cpu}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was
    except OSError:
        pass
    return info


def emit(result: dict) -> None:
    """Print the result as the script's last line (one JSON object)."""
    print(json.dumps(result, sort_keys=True), flush=True)


def log(msg: str) -> None:
    print(msg, flush=True)


def finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"non-finite benchmark value {x}")
    return x


# ---------------------------------------------------------------------------------------------- timing
def timed_rounds(
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time every function ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    Rounds alternate the order (A B, B A, ...) so that a function is not always the one that runs right after
    another's garbage.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num[i] / den[i]``."""
    return float(statistics.median(a / b for a, b in zip(num, den)))


# ---------------------------------------------------------------------------------------------- FLOPs
def _sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(q, k, v)


def _sdpa_cpu_bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out, q, k, v)


# torch's FLOP counter knows the CUDA attention kernels but not the CPU flash kernel SDPA picks here; without
# these two entries every attention matmul on CPU would count as zero.
_CPU_SDPA = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_bwd,
}


def flop_counter() -> fc.FlopCounterMode:
    """A ``FlopCounterMode`` that also counts CPU SDPA (display off)."""
    return fc.FlopCounterMode(display=False, custom_mapping=dict(_CPU_SDPA))


def count_flops(fn: Callable[[], object]) -> int:
    with flop_counter() as c:
        fn()
    return int(c.get_total_flops())


# ---------------------------------------------------------------------------------------------- data
def clips(seconds: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-zero-padded waveforms ``(c, s)`` (tones + noise) and lengths ``(c,)`` for clips of
    ``seconds``."""
    g = torch.Generator().manual_seed(seed)
    lens = [max(400, round(s * SR)) for s in seconds]
    s_max = max(lens)
    wav = torch.zeros(len(lens), s_max)
    t = torch.arange(s_max) / SR
    for i, n in enumerate(lens):
        f0 = 150.0 + 40.0 * i
        wav[i, :n] = 0.3 * torch.sin(2 * math.pi * f0 * t[:n]) + 0.05 * torch.randn(n, generator=g)
    return wav, torch.tensor(lens)


def uniform_seconds(n: int, lo: float, hi: float, seed: int) -> list[float]:
    """``n`` clip durations, uniform in ``[lo, hi]`` with a fixed seed; the longest is set to ``hi`` so every
    run pads to the same batch maximum."""
    g = torch.Generator().manual_seed(seed)
    secs = (lo + (hi - lo) * torch.rand(n, generator=g)).tolist()
    secs[int(torch.tensor(secs).argmax())] = hi
    return [round(s, 3) for s in secs]


def prompts(
    n: int,
    audio_id: int,
    *,
    n_prompt: int = 12,
    n_answer: int = 8,
    vocab: int = 1000,
    seed: int = 0,
    audio_tokens: list[int] | None = None,
):
    """``<bos> <audio>*k instruction answer`` per sample: input_ids, attention_mask, labels (answer only).

    ``audio_tokens[i]`` placeholders for sample ``i`` (Qwen2-Audio's expanded form); one each by default.
    Returns right-padded tensors.
    """
    g = torch.Generator().manual_seed(seed)
    rows, labs = [], []
    for i in range(n):
        k = 1 if audio_tokens is None else int(audio_tokens[i])
        text = torch.randint(10, vocab, (n_prompt + n_answer,), generator=g).tolist()
        ids = [1] + [audio_id] * k + text
        lab = [-100] * (1 + k + n_prompt) + text[n_prompt:]
        rows.append(ids)
        labs.append(lab)
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(n, width, dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labs)):
        input_ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    return input_ids, mask, labels


# ---------------------------------------------------------------------------------------------- models
def whisper(size: str, *, pad_to_30s: bool, quick: bool, freeze: bool = True, **overrides):
    from mowe.encoders import WhisperEncoder

    kw = dict(QUICK_WHISPER if size not in ("tiny",) else QUICK_WEAK_WHISPER) if quick else {}
    kw.update(overrides)
    return WhisperEncoder.from_preset(size, pad_to_30s=pad_to_30s, freeze=freeze, **kw)


def hubert(*, quick: bool):
    from mowe.encoders import HubertEncoder

    return HubertEncoder.from_preset("hubert-base", **(QUICK_HUBERT if quick else {}))


def weak_encoders(*, quick: bool) -> dict[str, nn.Module]:
    """The MoWE-Audio pool: 2 Whisper-tiny-shaped (real length) + 2 HuBERT-base-shaped, random weights."""
    return {
        "whisper_tiny_a": whisper("tiny", pad_to_30s=False, quick=quick),
        "whisper_tiny_b": whisper("tiny", pad_to_30s=False, quick=quick),
        "hubert_a": hubert(quick=quick),
        "hubert_b": hubert(quick=quick),
    }


def llm_config(
    model_type: str, *, hidden: int, layers: int, vocab: int, quick: bool, heads: int | None = None
):
    """A transformers config dict for a small Llama/Qwen2-like LM (intermediate ~ 2.75 x hidden, MHA)."""
    if quick:
        d = dict(QUICK_LLM)
    else:
        heads = heads or max(1, hidden // 64)
        d = {
            "hidden_size": hidden,
            "intermediate_size": int(hidden * 2.75) // 64 * 64,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
        }
    d.update(
        model_type=model_type,
        vocab_size=256 if quick else vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return d


def build_llm(cfg: dict, *, train: str = "lora"):
    """A random-weight causal LM from a config dict, with LoRA r=8/a=16 on q,v (peft default) or full."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mowe import apply_training_mode
    from mowe.config import LoRAConfig

    c = dict(cfg)
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**c))
    return apply_training_mode(llm, train, LoRAConfig(r=8, alpha=16))


class BalancedRouter(nn.Module):
    """Runs the real router (its cost and gradients count) but forces a fixed, balanced assignment.

    A freshly initialised router sends clips wherever its random weights point; a trained one, under the
    load-balance loss, spreads them. Fixing the assignment makes runs repeatable and representative.
    """

    def __init__(self, inner: nn.Module, assignment: list[int]):
        super().__init__()
        self.inner = inner
        self.register_buffer(
            "assignment", torch.tensor(assignment, dtype=torch.long)[:, None], persistent=False
        )

    def forward(self, features, lengths):
        from mowe.routers.base import RouterOutput
        from mowe.routers.mixture import load_balance_loss

        out = self.inner(features, lengths)
        idx = self.assignment[: features.shape[0]].to(out.probs.device)
        gates = torch.zeros_like(out.probs).scatter(-1, idx, out.probs.gather(-1, idx))
        return RouterOutput(
            logits=out.logits,
            probs=out.probs,
            gates=gates,
            indices=idx,
            aux_loss=load_balance_loss(out.probs, idx),
        )


def build_mowe(
    *,
    strong: nn.Module,
    weak: dict[str, nn.Module] | None,
    llm: nn.Module,
    audio_id: int,
    stack: int = 4,
    assignment: list[int] | None = None,
):
    """MoWEAudioLLM with a FrameStack connector; with a weak pool, routing is fixed by ``assignment``."""
    from mowe import MoWEAudioLLM
    from mowe.builders import build_router
    from mowe.config import RouterConfig
    from mowe.connectors import FrameStackConnector
    from mowe.encoders.pool import WeakEncoderPool

    pool = WeakEncoderPool(encoders=weak) if weak else None
    in_dim = int(strong.out_dim) + (pool.out_dim if pool is not None else 0)
    d_llm = llm.get_input_embeddings().embedding_dim
    connector = FrameStackConnector(in_dim=in_dim, out_dim=d_llm, stack=stack)
    router = None
    if pool is not None:
        router = build_router(RouterConfig(top_k=1), strong_dim=int(strong.out_dim), num_encoders=len(pool))
        if assignment is not None:
            router = BalancedRouter(router, assignment)
    return MoWEAudioLLM(
        strong_encoder=strong,
        weak_encoders=pool,
        router=router,
        connector=connector,
        llm=llm,
        audio_token_id=audio_id,
    )


def balanced_assignment(n_clips: int, n_enc: int) -> list[int]:
    """Clip ``i`` -> encoder ``i mod e`` (2 clips per encoder for 8 clips over 4)."""
    return [i % n_enc for i in range(n_clips)]


def train_step_fn(model: nn.Module, batch: dict, *, autocast: bool = False, lr: float = 1e-4):
    """A closure doing forward + backward + AdamW step on ``batch`` (kwargs of ``model``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()

    def step():
        with (
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast and not torch.cuda.is_available()),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and torch.cuda.is_available()),
        ):
            out = model(**batch)
            loss = out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


DEFAULT_THREADS = 1


def set_threads(n: int | None) -> int:
    """Intra-op threads for this process (default 1, see below); returns the number set.

    The benchmark machine is a shared 2-core box that usually runs other jobs (load average ~4). With 2 OpenMP
    threads every parallel region waits at a barrier for a thread the OS has descheduled, which punishes small
    ops far more than big ones (HuBERT-base on 2 clips: 1.0 s with 1 thread, 1.8 s with 2; on 8 clips 4.3 vs
    5.5 s), so ratios would measure the neighbours, not mowe. ``--threads`` / ``MOWE_BENCH_THREADS`` change
    it.
    """
    if n is None:
        n = int(os.environ.get("MOWE_BENCH_THREADS", DEFAULT_THREADS))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def parse_quick(argv: list[str] | None = None):
    import argparse

    p = argparse.ArgumentParser(
        description=sys.modules["__main__"].__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch intra-op threads (default {DEFAULT_THREADS} or $MOWE_BENCH_THREADS)",
    )
    return p
