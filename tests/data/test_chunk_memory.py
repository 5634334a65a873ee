"""Long audio in windows: ``stream_audio`` keeps memory bounded and gives the same windows as
``load_audio``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from mowe.data.audio import load_audio
from mowe.data.audio_stream import stream_audio
from mowe.errors import AudioLoadError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in a fresh process so that the peak RSS (ru_maxrss) measures this load alone, after a warm-up that
# imports and runs every piece once (torch, soundfile, soxr's streaming resampler).
_SCRIPT = textwrap.dedent("""
    import json, resource, struct, sys
    import numpy as np
    import soundfile as sf
    from mowe.data.audio_stream import stream_audio

    big, small = sys.argv[1], sys.argv[2]
    rate, seconds = 8000, 7200
    frames = rate * seconds
    with open(big, "wb") as f:  # a 2-hour 16-bit WAV: 1 s of tone, then sparse zeros (digital silence)
        fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
        f.write(b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVEfmt " + fmt + b"data"
                + struct.pack("<I", 2 * frames))
        f.write((8000 * np.sin(np.arange(rate) * 0.1)).astype("<i2").tobytes())
        f.truncate(44 + 2 * frames)
    sf.write(small, np.zeros(4000, dtype=np.float32), rate)
    for w in stream_audio(small, window_seconds=30):  # warm-up
        pass
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = windows = 0
    peak_abs = 0.0
    for w in stream_audio(big, window_seconds=30):
        n += w.shape[0]
        windows += 1
        peak_abs = max(peak_abs, float(w.abs().max()))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"samples": n, "windows": windows, "grown_mb": grown_mb, "peak_abs": peak_abs}))
""")


def test_two_hour_file_streams_in_windows_under_100_mb(tmp_path):
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    res = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "two hours.wav"), str(tmp_path / "s.wav")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # 2 h at 8 kHz resampled to 16 kHz: 115.2 M samples (461 MB as float32) in 240 windows of 30 s.
    assert out["windows"] == 240
    assert abs(out["samples"] - 7200 * 16000) <= 2
    assert 0.1 < out["peak_abs"] < 0.3  # the tone at the start came through
    assert out["grown_mb"] < 100, out


def test_stream_matches_load_audio_chunks_with_resampling(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal(22_050 * 7 + 123)).astype(np.float32)
    p = tmp_path / "x.wav"
    sf.write(p, x, 22_050)
    whole = load_audio(p, max_seconds=2.5, length_policy="chunk")
    windows = list(stream_audio(p, window_seconds=2.5))
    assert [w.shape[0] for w in windows] == [c.shape[0] for c in whole.chunks]
    for a, b in zip(windows, whole.chunks):
        assert np.allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_stream_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadError, match="empty.wav"):
        list(stream_audio(empty, window_seconds=1))
    bad = tmp_path / "nan.wav"
    sf.write(bad, np.array([0.0, np.nan] * 100, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="nan.wav.*NaN"):
        list(stream_audio(bad, window_seconds=1))
