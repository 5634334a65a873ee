"""The windowed Whisper's family was renamed (``whisper_ltu`` -> ``whisper_window``): configs saved with the
old name still load, with a DeprecationWarning, and give the same model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import AUDIO_ID, make_batch

from mowe.config import EncoderConfig, MoWEConfig, from_dict
from mowe.ltu_as import ltu_as
from mowe.model import MoWEAudioLLM


def test_old_family_name_loads_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="'whisper_ltu' is now called 'whisper_window'"):
        cfg = EncoderConfig("whisper_ltu", preset="tiny")
    assert cfg.family == "whisper_window"
    with pytest.warns(DeprecationWarning):
        full = from_dict(MoWEConfig, {"strong": {"family": "whisper_ltu"}, "weak": {}})
    assert full.strong.family == "whisper_window"


def _old_folder(tmp_path):
    torch.manual_seed(0)
    model = ltu_as(tiny=True, audio_token_id=AUDIO_ID, vocab_size=128).build().eval()
    model.save_pretrained(tmp_path)
    path = os.path.join(tmp_path, "config.json")
    with open(path) as f:
        text = f.read()
    assert text.count('"whisper_window"') == 1
    with open(path, "w") as f:
        f.write(text.replace('"whisper_window"', '"whisper_ltu"'))  # as mowe wrote it before the rename
    return model


def test_a_saved_model_with_the_old_family_loads_and_computes_the_same(tmp_path):
    model = _old_folder(tmp_path)
    with pytest.warns(DeprecationWarning, match="whisper_ltu"):
        again = MoWEAudioLLM.from_pretrained(str(tmp_path)).eval()
    assert again.config.strong.family == "whisper_window"
    wav, wl, ids, am, _ = make_batch()
    with torch.no_grad():
        assert torch.equal(
            model(ids, wav, wl, attention_mask=am).logits, again(ids, wav, wl, attention_mask=am).logits
        )


def test_the_public_class_loads_it_in_a_fresh_interpreter(tmp_path):
    """``from mowe import MoWEAudioLLM`` alone (no seed package imported by hand) knows the old name."""
    _old_folder(tmp_path)
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "from mowe import MoWEAudioLLM\n"
        "try:\n    MoWEAudioLLM.from_pretrained(r'%s')\n"
        "except DeprecationWarning as e:\n    print('warned:', e)\n" % tmp_path
    )
    repo = str(Path(__file__).resolve().parents[2])  # this checkout's mowe, whatever the installed one is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "warned: encoder family 'whisper_ltu' is now called 'whisper_window'" in out.stdout
