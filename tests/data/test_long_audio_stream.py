"""Long files: windows do not depend on the read-chunk size, and a file past the maximum duration is a named
error (naming the limit, the duration and the file) raised before its samples are decoded."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from mowe.data.audio_stream import check_duration, stream_audio
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.errors import AudioTooLongError, ConfigError, MoWEInputError


def _noise(path, seconds: float, sr: int, channels: int = 1, subtype: str = "PCM_16"):
    rng = np.random.default_rng(sr + channels)
    sf.write(
        path,
        (0.2 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32),
        sr,
        subtype=subtype,
    )
    return path


@pytest.mark.parametrize("sr,channels", [(16000, 1), (44100, 2), (22050, 1)])
def test_windows_are_bit_identical_whatever_the_read_chunk_size(tmp_path, sr, channels):
    p = _noise(tmp_path / "x.wav", 7.3, sr, channels)
    ref = list(stream_audio(p, window_seconds=2.0))
    assert [w.shape[0] for w in ref][:-1] == [32000] * 3
    for read in (777, 4096, 10**6):
        got = list(stream_audio(p, window_seconds=2.0, read_frames=read))
        assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref)), read


def test_a_file_past_the_limit_is_refused_by_its_header_before_decoding(tmp_path, monkeypatch):
    import mowe.data.audio_stream as stream_mod

    long = _noise(tmp_path / "long.wav", 5.0, 8000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a sample was decoded")

    with monkeypatch.context() as m:
        m.setattr(stream_mod, "_mono_blocks", no_decoding)
        with pytest.raises(AudioTooLongError) as e:
            next(stream_audio(long, window_seconds=1, max_duration_seconds=4, option="--max-audio-seconds"))
    msg = str(e.value)
    assert "long.wav" in msg and "5.0 s" in msg and "maximum duration of 4 s" in msg
    assert "--max-audio-seconds" in msg
    assert (e.value.limit_seconds, e.value.duration_seconds) == (4.0, 5.0)
    with pytest.raises(AudioTooLongError, match="long.wav"):
        check_duration(long, 4.5)
    assert check_duration(long, 5.0) == pytest.approx(5.0)  # exactly the limit is allowed
    assert len(list(stream_audio(long, window_seconds=1, max_duration_seconds=5))) == 5
    with pytest.raises(MoWEInputError, match="max_duration_seconds"):
        next(stream_audio(long, window_seconds=1, max_duration_seconds=0))
    with pytest.raises(MoWEInputError, match="read_frames"):
        next(stream_audio(long, window_seconds=1, read_frames=0))


def test_processor_max_duration_applies_to_files_and_arrays_used_whole(tmp_path):
    tok = train_bpe_tokenizer(["what is said", "a low tone", "a high tone"] * 5, vocab_size=300)
    p = _noise(tmp_path / "six.wav", 6.0, 16000)
    chunk = MoWEProcessor(tok, max_audio_seconds=2.0, length_policy="chunk", max_duration_seconds=5.0)
    with pytest.raises(
        AudioTooLongError, match=r"six.wav.*6.0 s.*maximum duration of 5 s.*max_duration_seconds"
    ):
        chunk.prepare_audio(str(p))
    with pytest.raises(AudioTooLongError, match=r"audio\[0\].*6.0 s"):
        chunk(text="hi", audio=torch.zeros(6 * 16000), sampling_rate=16000)
    whole = MoWEProcessor(tok, max_audio_seconds=None, max_duration_seconds=5.0)
    with pytest.raises(AudioTooLongError, match="six.wav"):
        whole.prepare_audio(str(p))
    # "truncate" reads only the first max_audio_seconds: the limit does not apply.
    with pytest.warns(UserWarning):
        cut = MoWEProcessor(tok, max_audio_seconds=2.0, max_duration_seconds=5.0).prepare_audio(str(p))
    assert [w.shape[0] for w in cut] == [32000]
    # The limit is saved with the processor, and an old processor_config.json without it gets the default.
    chunk.save_pretrained(tmp_path / "proc")
    assert MoWEProcessor.from_pretrained(tmp_path / "proc").max_duration_seconds == 5.0
    assert MoWEProcessor(tok).max_duration_seconds == 3600.0
    with pytest.raises(ConfigError, match="max_duration_seconds"):
        MoWEProcessor(tok, max_duration_seconds=-1)
    # stream_windows gives prepare_audio's windows, lazily, whatever the read-chunk size.
    ok = MoWEProcessor(tok, max_audio_seconds=2.0, length_policy="chunk")
    ref = ok.prepare_audio(str(p))
    for read in (1000, 65536):
        got = list(ok.stream_windows(str(p), read_frames=read))
        assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, ref))


def test_an_mp3_is_held_to_the_limit_by_its_decoded_samples(tmp_path):
    """An MP3's header only estimates its length: the limit is checked on the samples as they are decoded."""
    p = tmp_path / "talk.mp3"
    x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 12)).astype(np.float32)
    with sf.SoundFile(p, "w", 16000, 1, format="MP3") as f:
        for i in range(0, x.size, 4096):
            f.write(x[i : i + 4096])
    assert check_duration(p, 5) == pytest.approx(12.0, abs=0.1)  # an estimate: not refused on it
    with pytest.raises(
        AudioTooLongError, match=r"talk.mp3' is at least .* s long.*maximum duration of 5 s"
    ) as e:
        list(stream_audio(p, window_seconds=2, max_duration_seconds=5))
    assert e.value.duration_seconds > 5
    assert sum(w.shape[0] for w in stream_audio(p, window_seconds=2, max_duration_seconds=12.5)) >= 16000 * 12
