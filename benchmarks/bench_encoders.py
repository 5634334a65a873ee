"""Whisper encoder: real-length (``pad_to_30s=False``) vs faithful 30 s padding on a 5 s clip.

Whisper-base-shaped encoder (random weights, eval, no_grad), batch 1 and 4, fp32 and bf16 autocast.
Key ``whisper_var_len_speedup_5s`` = padded time / real-length time at batch 1 (fp32).
"""

from __future__ import annotations

import _common as C
import torch


def main(argv=None) -> dict:
    args = C.parse_quick().parse_args(argv)
    C.set_threads(args.threads)
    torch.manual_seed(0)
    quick = args.quick
    seconds = 5.0
    enc = {pad: C.whisper("base", pad_to_30s=pad, quick=quick).eval() for pad in (False, True)}
    enc[True].load_state_dict(enc[False].state_dict())  # same weights: only the padding differs
    repeats = {1: 2 if quick else 5, 4: 2 if quick else 3}
    res: dict = {"clip_seconds": seconds, "preset": "base", "quick": quick}
    C.log(
        f"Whisper-base-shaped encoder, one {seconds:.0f} s clip per batch row; interleaved, median of rounds"
    )
    for bf16 in (False, True):
        batches = (1, 4) if not bf16 else (1,)  # bf16 batch 4 would add a minute for little news
        for b in batches:
            wav, lens = C.clips([seconds] * b)

            def run(pad, wav=wav, lens=lens, bf16=bf16):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return enc[pad](wav, lens)

            t = C.timed_rounds({"real": lambda: run(False), "pad30": lambda: run(True)}, repeats=repeats[b])
            ratio = C.paired_ratio(t["pad30"], t["real"])
            tag = f"b{b}" + ("_bf16" if bf16 else "")
            res[f"real_s_{tag}"] = C.median(t["real"])
            res[f"pad30_s_{tag}"] = C.median(t["pad30"])
            res[f"speedup_{tag}"] = ratio
            C.log(
                f"  {'bf16' if bf16 else 'fp32'} batch {b}: real-length {C.median(t['real']) * 1e3:8.1f} ms, "
                f"30 s padded {C.median(t['pad30']) * 1e3:8.1f} ms -> {ratio:.2f}x"
            )
    # FLOPs tell how much of the ratio is arithmetic (the rest is memory traffic / overheads).
    wav, lens = C.clips([seconds])
    with torch.no_grad():
        f_real = C.count_flops(lambda: enc[False](wav, lens))
        f_pad = C.count_flops(lambda: enc[True](wav, lens))
    res["flop_ratio_b1"] = f_pad / f_real
    C.log(f"  FLOPs batch 1: real {f_real / 1e9:.1f} G, padded {f_pad / 1e9:.1f} G ({f_pad / f_real:.2f}x)")
    res["whisper_var_len_speedup_5s"] = C.finite(res["speedup_b1"])
    res["whisper_var_len_speedup_5s_bf16"] = C.finite(res["speedup_b1_bf16"])
    res["whisper_var_len_speedup_5s_b4"] = C.finite(res["speedup_b4"])
    res["repeats"] = repeats
    res.update(C.device_info())
    C.log(f"whisper_var_len_speedup_5s = {res['whisper_var_len_speedup_5s']:.2f} (target >= 4)")
    C.emit(res)
    return res


if __name__ == "__main__":
    main()
