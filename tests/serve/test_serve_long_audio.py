"""`mowe serve` with long clips: a 5-minute clip is answered (decoded and encoded window by window, one
placeholder per window), a clip past ``--max-audio-seconds`` is refused with a 413 naming the limit, before it
is decoded, and a long WAV upload before its body is in."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _audio_helpers import write_long_wav

from mowe.serve.schemas import sniff_duration

pytest.register_assert_rewrite("_serve_helpers")
from _serve_helpers import INSTRUCTION, post_json

pytest_plugins = ["_serve_helpers"]


def _request(server, path: Path, fmt: str = "wav") -> dict:
    data = base64.b64encode(path.read_bytes()).decode()
    return {
        "model": server.name,
        "max_tokens": 3,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
                    {"type": "text", "text": INSTRUCTION},
                ],
            }
        ],
    }


def test_a_five_minute_clip_is_answered_window_by_window(servers, tmp_path):
    s = servers["main"]  # default --max-audio-seconds (600 s); the processor's windows are 8 s
    clip = Path(write_long_wav(tmp_path / "five minutes.wav", 300.0))
    status, body = post_json(s.api + "/chat/completions", _request(s, clip), timeout=120)
    assert status == 200, body
    assert isinstance(body["choices"][0]["message"]["content"], str)
    routes = body["mowe"]["router"]
    assert len(routes) == 38 and [r["clip"] for r in routes] == list(range(38))  # 37 windows of 8 s + 4 s
    # The prompt counts every window's audio tokens (8 s at 50 Hz stacked by 4: 100 tokens; the last, 4 s:
    # 50).
    assert body["usage"]["prompt_tokens"] >= 37 * 100 + 50


def test_a_clip_past_the_maximum_is_a_413_naming_the_limit_before_decoding(servers, tmp_path):
    s = servers["main"]
    wav = write_long_wav(tmp_path / "too long.wav", 610.0, sr=8000)
    clip = tmp_path / "too long.ogg"  # Ogg Vorbis: no length in its first bytes: the whole body is read first
    # Written in small blocks: libsndfile's Vorbis encoder crashes on big writes.
    with sf.SoundFile(wav) as src, sf.SoundFile(clip, "w", 8000, 1, format="OGG", subtype="VORBIS") as dst:
        for block in src.blocks(4096, dtype="float32"):
            dst.write(block)
    assert sniff_duration(json.dumps(_request(s, clip, fmt="ogg")).encode()[:65536]) is None
    t0 = time.monotonic()
    status, body = post_json(s.api + "/chat/completions", _request(s, clip, fmt="ogg"), timeout=120)
    assert status == 413, body
    err = body["error"]
    assert err["code"] == "audio_too_long" and err["param"] == "messages[0].content[0].input_audio.data"
    msg = err["message"]
    assert "610.0 s long" in msg and "maximum duration of 600 s" in msg and "--max-audio-seconds" in msg, msg
    assert "/tmp" not in msg  # the server's temporary file is not disclosed
    assert time.monotonic() - t0 < 30


def test_a_long_wav_upload_is_refused_from_its_first_kilobytes(servers, tmp_path):
    """A WAV's header in the body's first kilobytes already says the clip is too long: the rest of the upload
    is dropped as it arrives (not kept), and the 413 names the limit (from the header, so before any
    decoding)."""
    s = servers["main"]
    clip = Path(write_long_wav(tmp_path / "too long.wav", 700.0, sr=8000))
    status, body = post_json(s.api + "/chat/completions", _request(s, clip), timeout=120)
    err = body["error"]
    assert status == 413 and err["code"] == "audio_too_long" and err["param"] == "messages", err
    msg = err["message"]
    assert "the first audio part is 700.0 s long" in msg and "maximum duration of 600 s" in msg, msg


@pytest.mark.parametrize(
    "fmt,subtype,expected", [("WAV", "PCM_16", 70.0), ("FLAC", "PCM_16", 70.0), ("OGG", "VORBIS", None)]
)
def test_sniff_duration_reads_wav_and_flac_headers_from_a_body_prefix(fmt, subtype, expected):
    buf = io.BytesIO()
    sf.write(buf, np.full((8000 * 70, 2), 0.1, dtype=np.float32), 8000, format=fmt, subtype=subtype)
    part = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(buf.getvalue()).decode(), "format": fmt.lower()},
    }
    quoting = {"type": "text", "text": '"data": "UklGRg=="'}  # a text part quoting a "data" key: not audio
    body = json.dumps({"messages": [{"role": "user", "content": [quoting, part]}]}).encode()
    assert sniff_duration(body[:4096]) == expected
    assert sniff_duration(body[:40]) is None
