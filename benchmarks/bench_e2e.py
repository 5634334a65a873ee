"""End to end: mowe vs transformers' Qwen2-Audio built from an equivalent config, same batch, same process.

Both sides: a Whisper-base-shaped audio encoder (d 512, 6 layers, 8 heads, ffn 2048, 128 mel bins, frozen) and
the same Qwen2 LM (hidden 512, 4 layers, 8 heads, vocab 8192) with LoRA r=8/a=16 on q,v (the audio projector
trains on both sides). Audio tokens per second are matched: Qwen2-Audio average-pools the encoder 2x
(25 tokens/s), so mowe uses a stack-2 FrameStack connector (25 tokens/s).

Qwen2-Audio pads every clip to the full window and runs its encoder on all of it (its processor always pads to
``max_length``); its log-mel features are computed outside the timed region (favouring Qwen2-Audio), while mowe's
timing includes its own log-mel frontend. mowe runs with ``pad_to_30s=False`` (speed configuration) and also
with ``pad_to_30s=True`` (faithful; the same padding as Qwen2-Audio) so the reader sees where speed comes from.

Batch: 8 clips, uniform in 1-30 s (fixed seed). ``--window-s`` scales the encoder window and the clip range
together (default 7.5 s: clips 0.25-7.5 s, both encoders' ``max_source_positions`` 375) so the run fits a 2-core
CPU budget; ``--window-s 30`` is the real 30 s setup. Time-scaling keeps the padding ratios and understates the
attention share of padding (conservative for mowe).

Keys: ``infer_speedup_vs_qwen2audio`` (audio seconds per second of greedy generation, same prompt, same
``max_new_tokens``; mowe base-only vs Qwen2-Audio) and ``train_speedup_vs_qwen2audio`` (samples per second of a
forward + backward + AdamW step).
"""

from __future__ import annotations

import _common as C
import numpy as np
import torch
from torch import nn

from mowe.encoders.base import EncoderOutput

AUDIO_ID = 5


class BucketedEncoder(nn.Module):
    """Prototype of a fix, not part of mowe: encode clips in length-sorted groups, each trimmed to its longest.

    mowe's real-length path pads a batch to its longest clip, so one long clip makes every clip pay for its
    length. Sorting by length and encoding groups of ``group`` clips makes the cost follow the clips' own lengths.
    """

    def __init__(self, encoder: nn.Module, group: int = 2):
        super().__init__()
        self.encoder, self.group = encoder, group
        self.out_dim, self.frame_rate, self.min_samples = encoder.out_dim, encoder.frame_rate, encoder.min_samples

    def out_lengths(self, lengths):
        return self.encoder.out_lengths(lengths)

    def forward(self, waveforms, lengths):
        order = torch.argsort(lengths, descending=True)
        outs = []
        for i in range(0, len(order), self.group):
            sel = order[i:i + self.group]
            outs.append((sel, self.encoder(waveforms[sel, : int(lengths[sel].max())], lengths[sel])))
        t = max(o.features.shape[1] for _, o in outs)
        feats = outs[0][1].features.new_zeros(waveforms.shape[0], t, self.out_dim)
        flen = torch.zeros_like(lengths)
        for sel, o in outs:
            feats[sel, : o.features.shape[1]] = o.features
            flen[sel] = o.lengths
        return EncoderOutput(features=feats, lengths=flen)


def build_qwen2audio(enc_kw: dict, text_cfg: dict):
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    audio = dict(model_type="qwen2_audio_encoder", **enc_kw)
    cfg = Qwen2AudioConfig(audio_config=audio, text_config=dict(text_cfg), audio_token_index=AUDIO_ID)
    model = Qwen2AudioForConditionalGeneration(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    # LoRA on the LM's q,v only (the audio tower has q_proj/v_proj too: they stay frozen, as mowe's strong encoder).
    from mowe.config import LoRAConfig

    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=LoRAConfig().dropout,  # the same LoRA as mowe's side
                      target_modules=r".*language_model.*\.(q_proj|v_proj)")
    model = inject_adapter_in_model(lora, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n or "multi_modal_projector" in n)
    model.generation_config.pad_token_id = text_cfg["pad_token_id"]
    model.generation_config.eos_token_id = text_cfg["eos_token_id"]
    return model


def qwen_inputs(wav: torch.Tensor, lens: torch.Tensor, *, n_mels: int, window_s: float, vocab: int):
    """What ``Qwen2AudioProcessor`` would give: mel features padded to the window, the feature mask, and prompts
    whose ``<|AUDIO|>`` is expanded to each clip's token count (its formula)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    # A window of window_s instead of 30 s (chunk_length must be an int; the extractor reads these two).
    fe.n_samples = round(window_s * C.SR)
    fe.nb_max_frames = fe.n_samples // fe.hop_length
    audio = [wav[i, : int(lens[i])].numpy().astype(np.float32) for i in range(wav.shape[0])]
    feats = fe(audio, sampling_rate=C.SR, return_attention_mask=True, padding="max_length", return_tensors="pt")
    fmask = feats["attention_mask"]
    n_mel = fmask.sum(-1)
    n_tok = (((n_mel - 1) // 2 + 1) - 2) // 2 + 1  # processing_qwen2_audio: num_audio_tokens
    return feats["input_features"], fmask, n_tok.tolist()


def main(argv=None) -> dict:
    p = C.parse_quick()
    p.add_argument("--window-s", type=float, default=7.5, help="encoder window; clips span window/30 .. window")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args(argv)
    threads = C.set_threads(args.threads)
    torch.manual_seed(0)
    quick = args.quick
    window = 1.0 if quick else args.window_s
    repeats = 1 if quick else args.repeats
    new_tokens = 4 if quick else args.max_new_tokens
    n = 8
    seconds = C.uniform_seconds(n, window / 30.0, window, seed=0)
    wav, lens = C.clips(seconds)
    audio_s = float(lens.sum()) / C.SR
    frames = round(window * 50)  # encoder positions (1500 for 30 s)

    enc_kw = dict(C.QUICK_WHISPER if quick else {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8,
                                                      "encoder_ffn_dim": 2048})
    enc_kw.update(num_mel_bins=128, max_source_positions=frames)
    text_cfg = C.llm_config("qwen2", hidden=512, layers=4, vocab=8192, quick=quick)
    vocab = text_cfg["vocab_size"]

    # ---------------------------------------------------------------- models
    from mowe.encoders import WhisperEncoder

    qwen = build_qwen2audio(enc_kw, text_cfg)
    tower_sd = {k: v for k, v in qwen.model.audio_tower.state_dict().items() if not k.startswith("avg_pooler")}

    def strong(pad: bool):
        e = WhisperEncoder.from_preset("base", pad_to_30s=pad, **enc_kw)
        e.encoder.load_state_dict(tower_sd)  # the very same encoder weights as Qwen2-Audio's tower
        return e

    def mowe_model(pad: bool, weak: bool = False, bucketed: bool = False):
        s = strong(pad)
        if bucketed:
            s = BucketedEncoder(s)
        w = C.weak_encoders(quick=quick) if weak else None
        return C.build_mowe(strong=s, weak=w, llm=C.build_llm(text_cfg), audio_id=AUDIO_ID, stack=2,
                            assignment=C.balanced_assignment(n, 4) if weak else None)

    models = {"mowe_real": mowe_model(False), "mowe_pad30": mowe_model(True),
              "mowe_real_bucketed": mowe_model(False, bucketed=True), "mowe_moe_real": mowe_model(False, weak=True)}

    # ---------------------------------------------------------------- inputs
    q_feats, q_fmask, q_ntok = qwen_inputs(wav, lens, n_mels=128, window_s=window, vocab=vocab)
    q_ids, q_am, q_labels = C.prompts(n, AUDIO_ID, vocab=vocab, audio_tokens=q_ntok)
    m_ids, m_am, m_labels = C.prompts(n, AUDIO_ID, vocab=vocab)
    # Generation: prompt = <bos> <audio> instruction (no answer); Qwen2-Audio's batch is left-padded as HF expects.
    n_prompt = 12
    gp_ids, gp_am = q_ids.clone(), q_am.clone()
    q_gen_ids = torch.zeros(n, int((q_am.sum(1) - 8).max()), dtype=torch.long)
    q_gen_am = torch.zeros_like(q_gen_ids)
    for i in range(n):
        row = gp_ids[i, : int(gp_am[i].sum()) - 8]  # drop the 8 answer tokens
        q_gen_ids[i, -len(row):] = row
        q_gen_am[i, -len(row):] = 1
    m_gen_ids, m_gen_am = m_ids[:, : 2 + n_prompt], m_am[:, : 2 + n_prompt]
    res: dict = {"quick": quick, "window_s": window, "clip_seconds": seconds, "audio_seconds": audio_s,
                 "max_new_tokens": new_tokens, "repeats": repeats, "threads": threads,
                 "qwen2audio_audio_tokens": q_ntok, "training": "LoRA r=8 a=16 dropout 0.05 on the LM's q,v + projector; "
                 "encoders frozen; AdamW; fp32", "connector": "mowe stack-2 (25 tok/s) vs Qwen2-Audio avgpool-2 + "
                 "Linear (25 tok/s)", "decoding": f"greedy, exactly {new_tokens} new tokens, KV cache"}
    C.log(f"batch of {n} clips ({audio_s:.1f} s of audio, window {window:g} s): "
          f"{', '.join(f'{s:.2f}' for s in seconds)} s")

    gen_kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "num_beams": 1}

    def infer_qwen():
        qwen.eval()
        with torch.no_grad():
            return qwen.generate(input_ids=q_gen_ids, attention_mask=q_gen_am, input_features=q_feats,
                                 feature_attention_mask=q_fmask, **gen_kw)

    def infer_mowe(m):
        def f():
            m.eval()
            return m.generate(m_gen_ids, wav, lens, attention_mask=m_gen_am, **gen_kw)
        return f

    # Sanity: the same number of new tokens on every side.
    out_q, out_m = infer_qwen(), infer_mowe(models["mowe_real"])()
    res["qwen_new_tokens"] = int(out_q.shape[1] - q_gen_ids.shape[1])
    res["mowe_new_tokens"] = int(out_m.shape[1])
    C.log(f"new tokens per sample: Qwen2-Audio {res['qwen_new_tokens']}, mowe {res['mowe_new_tokens']}")

    infer = {"qwen2audio": infer_qwen, **{k: infer_mowe(m) for k, m in models.items()}}
    t_inf = C.timed_rounds(infer, repeats=repeats, warmup=0)  # the sanity calls above were the warm-up

    # A batch of short clips only (1-10 s of a 30 s window, scaled), as a length-grouping sampler would build:
    # where real-length encoding pays off. Same models and prompts.
    s_sec = C.uniform_seconds(n, window / 30.0, window / 3.0, seed=1)
    s_wav, s_lens = C.clips(s_sec)
    s_feats, s_fmask, s_ntok = qwen_inputs(s_wav, s_lens, n_mels=128, window_s=window, vocab=vocab)
    s_ids, s_am, _ = C.prompts(n, AUDIO_ID, vocab=vocab, audio_tokens=s_ntok)
    s_gen_ids = torch.zeros(n, int((s_am.sum(1) - 8).max()), dtype=torch.long)
    s_gen_am = torch.zeros_like(s_gen_ids)
    for i in range(n):
        row = s_ids[i, : int(s_am[i].sum()) - 8]
        s_gen_ids[i, -len(row):] = row
        s_gen_am[i, -len(row):] = 1

    def infer_qwen_short():
        with torch.no_grad():
            return qwen.generate(input_ids=s_gen_ids, attention_mask=s_gen_am, input_features=s_feats,
                                 feature_attention_mask=s_fmask, **gen_kw)

    def infer_mowe_short():
        return models["mowe_real"].generate(m_gen_ids, s_wav, s_lens, attention_mask=m_gen_am, **gen_kw)

    t_short = C.timed_rounds({"qwen2audio": infer_qwen_short, "mowe_real": infer_mowe_short}, repeats=repeats + 1)
    res["short_clip_seconds"] = s_sec
    res["infer_speedup_vs_qwen2audio_short"] = C.finite(C.paired_ratio(t_short["qwen2audio"], t_short["mowe_real"]))

    # ---------------------------------------------------------------- training
    qwen.train()
    q_params = [p for p in qwen.parameters() if p.requires_grad]
    q_opt = torch.optim.AdamW(q_params, lr=1e-4)

    def train_qwen():
        out = qwen(input_ids=q_ids, attention_mask=q_am, input_features=q_feats, feature_attention_mask=q_fmask,
                   labels=q_labels)
        out.loss.backward()
        q_opt.step()
        q_opt.zero_grad(set_to_none=True)

    batch = {"input_ids": m_ids, "waveforms": wav, "wave_lengths": lens, "attention_mask": m_am, "labels": m_labels}
    train = {"qwen2audio": train_qwen}
    for k in ("mowe_real", "mowe_pad30"):
        train[k] = C.train_step_fn(models[k], batch)
        models[k].strong_encoder.eval()  # frozen tower: no dropout (Qwen2-Audio's tower has dropout 0 too)
    for f in train.values():  # warm-up
        f()
    t_tr = C.timed_rounds(train, repeats=repeats, warmup=0)

    # ---------------------------------------------------------------- report
    for k, ts in t_inf.items():
        res[f"infer_s_{k}"] = C.median(ts)
        res[f"infer_audio_s_per_s_{k}"] = audio_s / C.median(ts)
    for k, ts in t_tr.items():
        res[f"train_s_{k}"] = C.median(ts)
        res[f"train_samples_per_s_{k}"] = n / C.median(ts)
    res["infer_speedup_vs_qwen2audio"] = C.finite(C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_real"]))
    res["infer_speedup_vs_qwen2audio_pad30"] = C.finite(C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_pad30"]))
    res["infer_speedup_vs_qwen2audio_mowe"] = C.finite(C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_moe_real"]))
    res["infer_speedup_vs_qwen2audio_bucketed"] = C.finite(
        C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_real_bucketed"]))
    res["train_speedup_vs_qwen2audio"] = C.finite(C.paired_ratio(t_tr["qwen2audio"], t_tr["mowe_real"]))
    res["train_speedup_vs_qwen2audio_pad30"] = C.finite(C.paired_ratio(t_tr["qwen2audio"], t_tr["mowe_pad30"]))
    C.log("inference (audio s per s):")
    for k in infer:
        C.log(f"  {k:20s} {res[f'infer_s_{k}']:7.2f} s  {res[f'infer_audio_s_per_s_{k}']:7.2f} audio-s/s")
    C.log("training (samples per s):")
    for k in train:
        C.log(f"  {k:20s} {res[f'train_s_{k}']:7.2f} s  {res[f'train_samples_per_s_{k}']:7.2f} samples/s")
    C.log(f"infer_speedup_vs_qwen2audio = {res['infer_speedup_vs_qwen2audio']:.2f} (target >= 2; faithful pad "
          f"{res['infer_speedup_vs_qwen2audio_pad30']:.2f}, MoWE {res['infer_speedup_vs_qwen2audio_mowe']:.2f}, "
          f"length-bucketed prototype {res['infer_speedup_vs_qwen2audio_bucketed']:.2f})")
    C.log(f"  short-clip batch ({', '.join(f'{x:.2f}' for x in s_sec)} s): mowe real length "
          f"{res['infer_speedup_vs_qwen2audio_short']:.2f}x Qwen2-Audio")
    C.log(f"train_speedup_vs_qwen2audio = {res['train_speedup_vs_qwen2audio']:.2f} (target >= 1.5; faithful pad "
          f"{res['train_speedup_vs_qwen2audio_pad30']:.2f})")
    res.update(C.device_info())
    res["threads"] = threads
    C.emit(res)
    return res


if __name__ == "__main__":
    main()
