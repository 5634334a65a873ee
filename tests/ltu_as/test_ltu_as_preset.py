"""The LTU-AS preset built from mowe's parts (moved from tests/test_presets.py with the preset)."""

from conftest import AUDIO_ID, make_batch

from mowe.ltu_as import ltu_as


def test_ltu_as_consumes_every_whisper_layer():
    p = ltu_as(faithful=False)
    assert p.config.strong.output_all_layers and p.config.connector.options["num_layers_in"] == 33
    assert (p.config.lora.r, p.config.lora.alpha) == (8, 16)
    # faithful (the default): LTU-AS's own Whisper features, the 32 raw block outputs, a TLTR without key bias
    f = ltu_as().config
    assert f.strong.family == "whisper_window" and f.connector.options["num_layers_in"] == 32
    assert f.connector.options["key_bias"] is False and (f.lora.r, f.lora.alpha) == (8, 16)
    model = ltu_as(tiny=True, faithful=False, audio_token_id=AUDIO_ID, vocab_size=128).build().eval()
    wav, wl, *_ = make_batch()
    enc = model.encode_audio(wav, wl)
    assert enc.lengths.tolist() == [-(-int(f) // 20) for f in model.strong_encoder.out_lengths(wl)]
