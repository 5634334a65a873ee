"""The seed systems as tiny presets: forward, a training step, generation (issue 5, must-show 1)."""

import dataclasses

import pytest
import torch
from conftest import AUDIO_ID, make_batch

from mowe.errors import ConfigError
from mowe.presets import PRESETS, PROMPT_TEMPLATES, STAGE_PRESETS, ltu_as, mowe_paper, salmonn


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tiny_preset_forward_train_step_generate(name):
    preset = PRESETS[name](tiny=True, audio_token_id=AUDIO_ID, vocab_size=128)
    model = preset.build()
    wav, wl, ids, am, labels = make_batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(ids, wav, wl, attention_mask=am, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    opt.step()
    model.eval()
    gen = model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3)
    assert gen.shape[0] == 3
    assert preset.stages and "{audio}" in preset.prompt_template and "{instruction}" in preset.prompt_template


def test_mowe_paper_real_config():
    cfg = mowe_paper().config
    assert cfg.strong.name_or_path == "openai/whisper-large-v3" and len(cfg.weak_encoders) == 4
    assert cfg.router.data_independent and cfg.router.data_dependent and cfg.router.aux_loss_weight == 0.1


def test_set_lora_scale_changes_outputs_and_one_restores_them():
    model = salmonn(tiny=True, audio_token_id=AUDIO_ID, vocab_size=128).build().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)  # LoRA B starts at zero; give the adapters an effect
    wav, wl, ids, am, _ = make_batch()
    with torch.no_grad():
        ref = model(ids, wav, wl, attention_mask=am).logits
        model.set_lora_scale(0.5)
        half = model(ids, wav, wl, attention_mask=am).logits
        model.set_lora_scale(1.0)
        back = model(ids, wav, wl, attention_mask=am).logits
    assert not torch.allclose(ref, half, atol=1e-4)
    torch.testing.assert_close(back, ref)


def test_preset_wires_its_prompt_format_and_inference_lora_scale():
    from mowe.data.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(["what is the sound"], vocab_size=300)
    with pytest.raises(
        ConfigError, match="for_tokenizer"
    ):  # placeholder id 5 is not the tokenizer's <|audio|>
        salmonn(tiny=True, audio_token_id=AUDIO_ID, vocab_size=128).processor(tok)
    preset = salmonn(tiny=True, vocab_size=128).for_tokenizer(tok)
    proc = preset.processor(tok)
    assert proc.prompt_template == preset.prompt_template and "<Speech>" in proc.build_prompt("what is it")

    def scales(model):
        return {
            s["default"] for m in model.llm.modules() if isinstance(s := getattr(m, "scaling", None), dict)
        }

    # SALMONN's official decoding keeps the trained LoRA scale (alpha / r = 4.0); activation tuning is a
    # stage.
    assert preset.inference_lora_scale == 1.0 and scales(preset.for_inference(preset.build())) == {32 / 8}
    halved = dataclasses.replace(preset, inference_lora_scale=0.5)
    assert scales(halved.for_inference(halved.build())) == {0.5 * 32 / 8}


def test_the_registry_lists_each_system_once():
    # run files' `stages: {preset: NAME}` give the presets' own curricula
    assert tuple(STAGE_PRESETS["salmonn"]((3, 4, 5))) == salmonn(steps=(3, 4, 5)).stages
    assert tuple(STAGE_PRESETS["ltu_as"](2)) == ltu_as(steps=2).stages
    assert (
        tuple(STAGE_PRESETS["mowe"](7)) == tuple(STAGE_PRESETS["mowe_paper"](7)) == mowe_paper(steps=7).stages
    )
    with pytest.raises(ConfigError, match="one stage"):
        STAGE_PRESETS["mowe"]([1, 2])
    assert PROMPT_TEMPLATES["salmonn"] == salmonn().prompt_template
    assert PROMPT_TEMPLATES["ltu_as_faithful"] == ltu_as().prompt_template
    assert PROMPT_TEMPLATES["ltu_as"] == ltu_as(faithful=False).prompt_template
