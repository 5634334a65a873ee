"""The SALMONN preset built from mowe's parts (moved from tests/test_presets.py with the preset)."""

import torch
from conftest import AUDIO_ID, make_batch

from mowe.salmonn import salmonn


def test_salmonn_qformer_emits_one_token_per_17_frames():
    model = salmonn(tiny=True, audio_token_id=AUDIO_ID, vocab_size=128, faithful=False).build().eval()
    wav, wl, *_ = make_batch()
    enc = model.encode_audio(wav, wl)
    frames = model.strong_encoder.out_lengths(wl)  # 50 Hz Whisper frames
    assert enc.lengths.tolist() == [-(-int(f) // 17) for f in frames]
    # BEATs is concatenated to every clip (SALMONN has no routing): the one-encoder pool is always selected.
    assert (enc.router.indices == 0).all() and torch.allclose(enc.router.gates, torch.ones(3, 1))


def test_salmonn_real_config_matches_the_paper():
    cfg = salmonn().config
    assert (
        cfg.strong.name_or_path == "openai/whisper-large-v2" and cfg.weak_encoders["beats"].family == "beats"
    )
    assert cfg.connector.options["window"] == cfg.connector.options["stride"] == 17
    assert cfg.connector.options["num_layers"] == 2 and cfg.connector.options["hidden_dim"] == 768
    # The official decoding keeps the trained LoRA scaling (activation tuning is a training stage).
    assert (cfg.lora.r, cfg.lora.alpha) == (8, 32) and salmonn().inference_lora_scale == 1.0
    assert (
        cfg.strong.full_window
        and cfg.router.align == "pad"
        and cfg.connector.options["partial_window"] == "drop"
    )
    assert cfg.connector.options["stream_dims"] == [1280, 768]
    assert (
        (cfg.strong.min_seconds, cfg.strong.max_seconds)
        == (cfg.weak_encoders["beats"].min_seconds, 30.0)
        == (1.0, 30.0)
    )
