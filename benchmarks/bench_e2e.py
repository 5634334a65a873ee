"""End to end: mowe vs transformers' Qwen2-Audio built from an equivalent config, same batch, same process.

Both sides: a Whisper-base-shaped audio encoder (d 512, 6 layers, 8 heads, ffn 2048, 128 mel bins, frozen) and
the same Qwen2 LM (hidden 512, 4 layers, 8 heads, vocab 8192) with LoRA r=8/a=16 on q,v (the audio projector
trains on both sides). Audio tokens per second are matched: Qwen2-Audio average-pools the encoder 2x
(25 tokens/s), so mowe uses a stack-2 FrameStack connector (25 tokens/s).

Qwen2-Audio pads every clip to the full window and runs its encoder on all of it (its processor always pads to
``max_length``); its log-mel features are computed outside the timed region (favouring Qwen2-Audio), while
mowe's timing includes its own log-mel frontend. mowe runs with ``pad_to_30s=False`` (speed configuration:
real-length clips, encoded in length groups with the default ``bucket_padding="auto"``, 0.05 on CPU; greedy
decoding with its prefill in length groups, ``generate(prefill_padding="auto")``) and, for context, with one
padded prefill (``prefill_padding=None``: transformers' ``generate``), with one padded batch in the encoder as
well (``bucket_padding=None``), with ``pad_to_30s=True`` (faithful; the same padding as Qwen2-Audio), with the
weak pool (MoWE) and with mowe's default stack-4 connector (12.5 audio tokens/s), so the reader sees where
speed comes from.

Beside the single batch, a small data set (``--dataset-clips``, e.g. 32 clips uniform in the clip range) is
run in
batches of 8 as each library would batch it: mowe with its trainer's length grouping, Qwen2-Audio in the same
batches (grouping cannot shrink its 30 s encoder input, but its LM padding shrinks too): keys ``*_dataset``.

Batch: 8 clips, uniform in 1-30 s (fixed seed), the real 30 s window (both encoders' ``max_source_positions``
1500), about 8 minutes on a 2-core CPU. ``--window-s`` scales the encoder window and the clip range together:
``--window-s 7.5`` (clips 0.25-7.5 s, 375 positions) is a 4x cheaper proxy that keeps the padding ratios but
understates the share of attention, quadratic in length (conservative for mowe); ``make bench`` runs it as
well, with the data set, its keys suffixed ``_w7.5`` (``--key-suffix``).

Keys: ``infer_speedup_vs_qwen2audio`` (audio seconds per second of greedy generation, same prompt, same
``max_new_tokens``; mowe base-only vs Qwen2-Audio) and ``train_speedup_vs_qwen2audio`` (samples per second of
a forward + backward + AdamW step).
"""

from __future__ import annotations

import _common as C
import numpy as np
import torch

AUDIO_ID = 5


def build_qwen2audio(enc_kw: dict, text_cfg: dict):
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    audio = dict(model_type="qwen2_audio_encoder", **enc_kw)
    cfg = Qwen2AudioConfig(audio_config=audio, text_config=dict(text_cfg), audio_token_index=AUDIO_ID)
    model = Qwen2AudioForConditionalGeneration(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    # LoRA on the LM's q,v only (the audio tower has q_proj/v_proj too: they stay frozen, as mowe's strong
    # encoder).
    from mowe.config import LoRAConfig

    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=LoRAConfig().dropout,  # the same LoRA as mowe's side
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
    )
    model = inject_adapter_in_model(lora, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n or "multi_modal_projector" in n)
    model.generation_config.pad_token_id = text_cfg["pad_token_id"]
    model.generation_config.eos_token_id = text_cfg["eos_token_id"]
    return model


def qwen_inputs(wav: torch.Tensor, lens: torch.Tensor, *, n_mels: int, window_s: float, vocab: int):
    """What ``Qwen2AudioProcessor`` would give: mel features padded to the window, the feature mask, and
    prompts whose ``<|AUDIO|>`` is expanded to each clip's token count (its formula)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    # A window of window_s instead of 30 s (chunk_length must be an int; the extractor reads these two).
    fe.n_samples = round(window_s * C.SR)
    fe.nb_max_frames = fe.n_samples // fe.hop_length
    audio = [wav[i, : int(lens[i])].numpy().astype(np.float32) for i in range(wav.shape[0])]
    feats = fe(
        audio, sampling_rate=C.SR, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    fmask = feats["attention_mask"]
    n_mel = fmask.sum(-1)
    n_tok = (((n_mel - 1) // 2 + 1) - 2) // 2 + 1  # processing_qwen2_audio: num_audio_tokens
    return feats["input_features"], fmask, n_tok.tolist()


class Batch:
    """One batch as each side consumes it: Qwen2-Audio's processor outputs and mowe's waveforms + prompts."""

    def __init__(self, seconds: list[float], *, window: float, vocab: int, seed: int = 0):
        n = len(seconds)
        self.seconds = seconds
        self.wav, self.lens = C.clips(seconds, seed=seed)
        self.audio_s = float(self.lens.sum()) / C.SR
        self.q_feats, self.q_fmask, self.q_ntok = qwen_inputs(
            self.wav, self.lens, n_mels=128, window_s=window, vocab=vocab
        )
        self.q_ids, self.q_am, self.q_labels = C.prompts(n, AUDIO_ID, vocab=vocab, audio_tokens=self.q_ntok)
        self.m_ids, self.m_am, self.m_labels = C.prompts(n, AUDIO_ID, vocab=vocab)
        # Generation: prompt = <bos> <audio> instruction (no answer); Qwen2-Audio's batch is left-padded as HF
        # expects, mowe re-pads on the left itself after merging the audio.
        n_answer = 8
        self.q_gen_ids = torch.zeros(n, int((self.q_am.sum(1) - n_answer).max()), dtype=torch.long)
        self.q_gen_am = torch.zeros_like(self.q_gen_ids)
        for i in range(n):
            row = self.q_ids[i, : int(self.q_am[i].sum()) - n_answer]
            self.q_gen_ids[i, -len(row) :] = row
            self.q_gen_am[i, -len(row) :] = 1
        width = int(self.m_am.sum(1).max()) - n_answer
        self.m_gen_ids, self.m_gen_am = self.m_ids[:, :width], self.m_am[:, :width]

    def train_kwargs(self, pack: bool | str) -> dict:
        return {
            "input_ids": self.m_ids,
            "waveforms": self.wav,
            "wave_lengths": self.lens,
            "attention_mask": self.m_am,
            "labels": self.m_labels,
            "pack": pack,
        }


def main(argv=None) -> dict:
    p = C.parse_quick()
    p.add_argument(
        "--window-s", type=float, default=30.0, help="encoder window; clips span window/30 .. window"
    )
    p.add_argument("--key-suffix", default="", help="appended to every reported key (a second run's keys)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--dataset-clips", type=int, default=0, help="clips in the data-set measurement (0: skip)")
    args = p.parse_args(argv)
    threads = C.set_threads(args.threads)
    torch.manual_seed(0)
    quick = args.quick
    window = 1.0 if quick else args.window_s
    repeats = 1 if quick else args.repeats
    new_tokens = 4 if quick else args.max_new_tokens
    n_data = 16 if quick else args.dataset_clips
    n = 8
    frames = round(window * 50)  # encoder positions (1500 for 30 s)

    enc_kw = dict(
        C.QUICK_WHISPER
        if quick
        else {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048}
    )
    enc_kw.update(num_mel_bins=128, max_source_positions=frames)
    text_cfg = C.llm_config("qwen2", hidden=512, layers=4, vocab=8192, quick=quick)
    vocab = text_cfg["vocab_size"]

    # ---------------------------------------------------------------- models
    from mowe.encoders import WhisperEncoder

    qwen = build_qwen2audio(enc_kw, text_cfg)
    tower_sd = {
        k: v for k, v in qwen.model.audio_tower.state_dict().items() if not k.startswith("avg_pooler")
    }

    def strong(pad: bool, bucket_padding: float | str | None = "auto"):
        e = WhisperEncoder.from_preset("base", pad_to_30s=pad, bucket_padding=bucket_padding, **enc_kw)
        e.encoder.load_state_dict(tower_sd)  # the very same encoder weights as Qwen2-Audio's tower
        return e

    def mowe_model(
        pad: bool, weak: bool = False, bucket_padding: float | str | None = "auto", stack: int = 2
    ):
        w = C.weak_encoders(quick=quick) if weak else None
        return C.build_mowe(
            strong=strong(pad, bucket_padding),
            weak=w,
            llm=C.build_llm(text_cfg),
            audio_id=AUDIO_ID,
            stack=stack,
            assignment=C.balanced_assignment(n, 4) if weak else None,
        )

    models = {
        "mowe_real": mowe_model(False),
        "mowe_real_onebatch": mowe_model(False, bucket_padding=None),
        "mowe_pad30": mowe_model(True),
        "mowe_moe_real": mowe_model(False, weak=True),
        "mowe_stack4": mowe_model(False, stack=4),
    }

    # ---------------------------------------------------------------- inputs
    main_batch = Batch(C.uniform_seconds(n, window / 30.0, window, seed=0), window=window, vocab=vocab)
    # Short clips only (1-10 s of a 30 s window, scaled), as a length-grouping sampler builds from a data set.
    short = Batch(C.uniform_seconds(n, window / 30.0, window / 3.0, seed=1), window=window, vocab=vocab)
    audio_s = main_batch.audio_s
    res: dict = {
        "quick": quick,
        "window_s": window,
        "clip_seconds": main_batch.seconds,
        "audio_seconds": audio_s,
        "max_new_tokens": new_tokens,
        "repeats": repeats,
        "threads": threads,
        "qwen2audio_audio_tokens": main_batch.q_ntok,
        "training": "LoRA r=8 a=16 dropout 0.05 on the LM's "
        "q,v + projector; encoders frozen; AdamW; fp32; mowe pack='auto' (the LLM layout of the least FLOPs, "
        "mowe_llm_layout)",
        "connector": "mowe stack-2 (25 tok/s) vs Qwen2-Audio avgpool-2 + Linear (25 tok/s)",
        "decoding": f"greedy, exactly {new_tokens} new "
        "tokens, KV cache; mowe generate(prefill_padding='auto'): prefill in length groups",
        "bucket_padding": "auto",
    }
    C.log(
        f"batch of {n} clips ({audio_s:.1f} s of audio, window {window:g} s): "
        f"{', '.join(f'{s:.2f}' for s in main_batch.seconds)} s"
    )

    gen_kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "num_beams": 1}

    def infer_qwen(b: Batch):
        qwen.eval()
        with torch.no_grad():
            return qwen.generate(
                input_ids=b.q_gen_ids,
                attention_mask=b.q_gen_am,
                input_features=b.q_feats,
                feature_attention_mask=b.q_fmask,
                **gen_kw,
            )

    def infer_mowe(m, b: Batch, prefill_padding: float | str | None = "auto"):
        m.eval()
        return m.generate(
            b.m_gen_ids, b.wav, b.lens, attention_mask=b.m_gen_am, prefill_padding=prefill_padding, **gen_kw
        )

    # Sanity: the same number of new tokens on every side.
    out_q, out_m = infer_qwen(main_batch), infer_mowe(models["mowe_real"], main_batch)
    res["qwen_new_tokens"] = int(out_q.shape[1] - main_batch.q_gen_ids.shape[1])
    res["mowe_new_tokens"] = int(out_m.shape[1])
    C.log(f"new tokens per sample: Qwen2-Audio {res['qwen_new_tokens']}, mowe {res['mowe_new_tokens']}")

    # mowe generates as it does by default (prefill in length groups); "padded_llm" shows what the grouped
    # prefill adds, "onebatch" is one padded batch in the encoder and in the prefill.
    infer = {
        "qwen2audio": lambda: infer_qwen(main_batch),
        **{
            k: (lambda m=m: infer_mowe(m, main_batch)) for k, m in models.items() if k != "mowe_real_onebatch"
        },
        "mowe_real_padded_llm": lambda: infer_mowe(models["mowe_real"], main_batch, prefill_padding=None),
        "mowe_real_onebatch": lambda: infer_mowe(
            models["mowe_real_onebatch"], main_batch, prefill_padding=None
        ),
    }
    t_inf = C.timed_rounds(infer, repeats=repeats, warmup=0)  # the sanity calls above were the warm-up

    t_short = C.timed_rounds(
        {
            "qwen2audio": lambda: infer_qwen(short),
            "mowe_real": lambda: infer_mowe(models["mowe_real"], short),
        },
        repeats=repeats + 1,
    )
    res["short_clip_seconds"] = short.seconds
    res["infer_speedup_vs_qwen2audio_short"] = C.finite(
        C.paired_ratio(t_short["qwen2audio"], t_short["mowe_real"])
    )

    # ---------------------------------------------------------------- training
    def qwen_step_fn(b: Batch):
        params = [p for p in qwen.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step():
            qwen.train()
            out = qwen(
                input_ids=b.q_ids,
                attention_mask=b.q_am,
                input_features=b.q_feats,
                feature_attention_mask=b.q_fmask,
                labels=b.q_labels,
            )
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def mowe_step_fn(m, b: Batch, pack: bool | str = "auto"):
        step = C.train_step_fn(m, b.train_kwargs(pack))

        def run():
            m.train()  # keeps frozen towers in eval (no dropout; Qwen2-Audio's tower has dropout 0 too)
            return step()

        return run

    # mowe trains as its Trainer does by default (pack_sequences="auto": the LLM layout of the least FLOPs,
    # length groups for this batch); "padded_llm" shows what that adds, "onebatch" is one padded batch
    # everywhere.
    with torch.no_grad():
        mask = models["mowe_real"](**main_batch.train_kwargs(False)).attention_mask
    res["mowe_llm_layout"] = {False: "padded", True: "packed"}.get(
        models["mowe_real"]._llm_layout(mask), "groups"
    )
    train = {"qwen2audio": qwen_step_fn(main_batch)}
    for k in ("mowe_real", "mowe_pad30", "mowe_stack4"):
        train[k] = mowe_step_fn(models[k], main_batch)
    train["mowe_real_padded_llm"] = mowe_step_fn(models["mowe_real"], main_batch, pack=False)
    train["mowe_real_onebatch"] = mowe_step_fn(models["mowe_real_onebatch"], main_batch, pack=False)
    for f in train.values():  # warm-up
        f()
    t_tr = C.timed_rounds(train, repeats=repeats, warmup=0)

    # ---------------------------------------------------------------- a data set, batched as each side would
    if n_data:
        from mowe.data.samplers import StageSampler

        secs = C.uniform_seconds(n_data, window / 30.0, window, seed=2)
        order = (
            StageSampler(
                num_examples=n_data,
                task_list=None,
                tasks=None,
                seed=0,
                stage_index=0,
                batch_size=n,
                lengths=secs,
            )
            .epoch_order(0)
            .tolist()
        )
        batches = [
            Batch([secs[i] for i in order[j : j + n]], window=window, vocab=vocab, seed=j)
            for j in range(0, n_data - n + 1, n)
        ]
        data_audio_s = sum(b.audio_s for b in batches)
        steps = {
            "qwen2audio": [qwen_step_fn(b) for b in batches],
            "mowe_real": [mowe_step_fn(models["mowe_real"], b) for b in batches],
        }
        t_data_inf = C.timed_rounds(
            {
                "qwen2audio": lambda: [infer_qwen(b) for b in batches],
                "mowe_real": lambda: [infer_mowe(models["mowe_real"], b) for b in batches],
            },
            repeats=repeats,
            warmup=0,
        )
        t_data_tr = C.timed_rounds(
            {k: (lambda fs=fs: [f() for f in fs]) for k, fs in steps.items()}, repeats=repeats, warmup=1
        )
        res["dataset_clip_seconds"] = secs
        res["dataset_batches"] = [b.seconds for b in batches]
        res["dataset_audio_seconds"] = data_audio_s
        res["infer_speedup_vs_qwen2audio_dataset"] = C.finite(
            C.paired_ratio(t_data_inf["qwen2audio"], t_data_inf["mowe_real"])
        )
        res["train_speedup_vs_qwen2audio_dataset"] = C.finite(
            C.paired_ratio(t_data_tr["qwen2audio"], t_data_tr["mowe_real"])
        )

    # ---------------------------------------------------------------- report
    for k, ts in t_inf.items():
        res[f"infer_s_{k}"] = C.median(ts)
        res[f"infer_audio_s_per_s_{k}"] = audio_s / C.median(ts)
    for k, ts in t_tr.items():
        res[f"train_s_{k}"] = C.median(ts)
        res[f"train_samples_per_s_{k}"] = n / C.median(ts)
    res["infer_speedup_vs_qwen2audio"] = C.finite(C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_real"]))
    res["train_speedup_vs_qwen2audio"] = C.finite(C.paired_ratio(t_tr["qwen2audio"], t_tr["mowe_real"]))
    for suffix, key in (
        ("onebatch", "mowe_real_onebatch"),
        ("pad30", "mowe_pad30"),
        ("stack4", "mowe_stack4"),
    ):
        res[f"infer_speedup_vs_qwen2audio_{suffix}"] = C.finite(
            C.paired_ratio(t_inf["qwen2audio"], t_inf[key])
        )
        res[f"train_speedup_vs_qwen2audio_{suffix}"] = C.finite(C.paired_ratio(t_tr["qwen2audio"], t_tr[key]))
    res["train_speedup_vs_qwen2audio_padded_llm"] = C.finite(
        C.paired_ratio(t_tr["qwen2audio"], t_tr["mowe_real_padded_llm"])
    )
    res["infer_speedup_vs_qwen2audio_mowe"] = C.finite(
        C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_moe_real"])
    )
    res["infer_speedup_vs_qwen2audio_padded_llm"] = C.finite(
        C.paired_ratio(t_inf["qwen2audio"], t_inf["mowe_real_padded_llm"])
    )
    C.log("inference (audio s per s):")
    for k in infer:
        C.log(f"  {k:20s} {res[f'infer_s_{k}']:7.2f} s  {res[f'infer_audio_s_per_s_{k}']:7.2f} audio-s/s")
    C.log("training (samples per s):")
    for k in train:
        C.log(f"  {k:20s} {res[f'train_s_{k}']:7.2f} s  {res[f'train_samples_per_s_{k}']:7.2f} samples/s")
    C.log(
        f"infer_speedup_vs_qwen2audio = {res['infer_speedup_vs_qwen2audio']:.2f} (target >= 2; padded "
        f"prefill "
        f"{res['infer_speedup_vs_qwen2audio_padded_llm']:.2f}, one padded batch "
        f"{res['infer_speedup_vs_qwen2audio_onebatch']:.2f}, faithful pad "
        f"{res['infer_speedup_vs_qwen2audio_pad30']:.2f}, "
        f"stack-4 {res['infer_speedup_vs_qwen2audio_stack4']:.2f}, MoWE "
        f"{res['infer_speedup_vs_qwen2audio_mowe']:.2f})"
    )
    C.log(
        f"  short-clip batch ({', '.join(f'{x:.2f}' for x in short.seconds)} s): mowe real length "
        f"{res['infer_speedup_vs_qwen2audio_short']:.2f}x Qwen2-Audio"
    )
    C.log(
        f"train_speedup_vs_qwen2audio = {res['train_speedup_vs_qwen2audio']:.2f} (target >= 1.5; padded LLM "
        f"{res['train_speedup_vs_qwen2audio_padded_llm']:.2f}, one padded batch "
        f"{res['train_speedup_vs_qwen2audio_onebatch']:.2f}, faithful pad "
        f"{res['train_speedup_vs_qwen2audio_pad30']:.2f}, "
        f"stack-4 {res['train_speedup_vs_qwen2audio_stack4']:.2f})"
    )
    if n_data:
        C.log(
            f"data set of {n_data} clips ({res['dataset_audio_seconds']:.1f} s) in length-grouped batches of "
            f"{n}: "
            f"inference {res['infer_speedup_vs_qwen2audio_dataset']:.2f}x, "
            f"training {res['train_speedup_vs_qwen2audio_dataset']:.2f}x Qwen2-Audio"
        )
    res.update(C.device_info())
    res["threads"] = threads
    if args.key_suffix:
        keep = set(C.device_info())
        res = {k if k in keep else f"{k}{args.key_suffix}": v for k, v in res.items()}
    C.emit(res)
    return res


if __name__ == "__main__":
    main()
