"""Pinned regression values (torchtune style): a router, two connectors, the merge, one encoder per family and
one whole-model forward, after a fixed seed.

Each module is built after ``torch.manual_seed(0)`` and fed inputs from its own seeded generator; the numbers
below were recorded from the implementation at the time of writing. A change that silently moves them (a new
initialisation, a reordered reduction, a different masking) fails here; a deliberate change re-records them
and says why in its commit. Tolerances allow float rounding across BLAS builds, not a change of algorithm.
"""

import pytest
import torch

from mowe.connectors.basic import FrameStackConnector
from mowe.connectors.qformer import WindowQFormerConnector
from mowe.merge import merge_audio_features
from mowe.routers import DataDependentRouter, DataIndependentRouter, MixtureRouter

ATOL = 1e-5


def _inputs(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_mixture_router_pinned():
    torch.manual_seed(0)
    router = MixtureRouter(
        routers=[
            DataIndependentRouter(num_encoders=4),
            DataDependentRouter(in_dim=8, num_encoders=4, hidden_dim=16),
        ],
        num_encoders=4,
        top_k=2,
    ).eval()
    out = router(_inputs(3, 5, 8), torch.tensor([5, 3, 1]))
    expected = torch.tensor(
        [
            [-0.025469210, -0.112653673, 0.020347629, 0.063712604],
            [-0.010869845, -0.026039159, 0.022573134, 0.043621156],
            [0.030677073, 0.017663319, 0.008714562, -0.019168498],
        ]
    )
    torch.testing.assert_close(out.logits, expected, atol=ATOL, rtol=0)
    assert out.indices.tolist() == [[3, 2], [3, 2], [0, 1]]
    assert out.aux_loss.item() == pytest.approx(1.0073618, abs=ATOL)


def test_frame_stack_connector_pinned():
    torch.manual_seed(0)
    conn = FrameStackConnector(in_dim=8, out_dim=6, stack=2).eval()
    out = conn(_inputs(2, 5, 8), torch.tensor([5, 3]))
    assert out.lengths.tolist() == [3, 2]
    assert out.embeds.sum().item() == pytest.approx(6.0600142, abs=1e-4)
    assert out.embeds.abs().sum().item() == pytest.approx(7.7422948, abs=1e-4)
    torch.testing.assert_close(
        out.embeds[0, 0],
        torch.tensor([-0.027001098, 0.438211679, 0.458686173, 0.171051562, 0.491997778, -0.020272803]),
        atol=ATOL,
        rtol=0,
    )


def test_window_qformer_connector_pinned():
    torch.manual_seed(0)
    conn = WindowQFormerConnector(
        in_dim=8, out_dim=6, hidden_dim=16, num_heads=2, num_layers=1, window=3, stride=3, num_queries=1
    ).eval()
    out = conn(_inputs(2, 7, 8), torch.tensor([7, 4]))
    assert out.lengths.tolist() == [3, 2]
    assert out.embeds.sum().item() == pytest.approx(5.5631456, abs=1e-4)
    assert out.embeds.abs().sum().item() == pytest.approx(17.0825176, abs=1e-4)
    torch.testing.assert_close(
        out.embeds[1, 0],
        torch.tensor([-0.547194719, 0.005227178, 0.582933545, -0.737615585, 1.155073881, 0.671724916]),
        atol=ATOL,
        rtol=0,
    )


def test_merge_pinned():
    ids = torch.tensor([[5, 9, 9, 7, 0], [5, 9, 7, 0, 0]])
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    emb, aud = _inputs(2, 5, 4, seed=2), _inputs(3, 3, 4, seed=3)
    m = merge_audio_features(
        input_ids=ids,
        inputs_embeds=emb,
        attention_mask=am,
        audio_embeds=aud,
        audio_lengths=torch.tensor([2, 3, 1]),
        audio_token_id=9,
        labels=ids.clone(),
        padding_side="left",
    )
    assert m.inputs_embeds.shape == (2, 8, 4)
    assert m.inputs_embeds.sum().item() == pytest.approx(-4.0135775, abs=1e-5)
    assert m.attention_mask.tolist() == [[1] * 8, [0, 0, 0, 0, 0, 1, 1, 1]]
    assert m.labels.tolist() == [[5, -100, -100, -100, -100, -100, 7, 0], [-100] * 5 + [5, -100, 7]]
    assert m.position_ids.tolist() == [list(range(8)), [0, 0, 0, 0, 0, 0, 1, 2]]


# ----------------------------------------------------------------------------------------------- encoders
# One encoder per family, built from its config entry after torch.manual_seed(0) (random toy weights; the GE2E
# speaker encoder and CREPE tiny load the weights shipped in their wheels), on two seeded clips (1 s, 0.6 s).
# Pinned: output shape and lengths, the sum of |features| and a seeded random projection of the features (any
# change of any value moves it).
def _encoder_configs():
    from mowe.config import EncoderConfig
    from mowe.recipes import TINY_BEATS, TINY_HUBERT, TINY_WEAK_WHISPER

    return {
        "whisper": EncoderConfig("whisper", preset="tiny", overrides=TINY_WEAK_WHISPER, pad_to_30s=False),
        "whisper_window": EncoderConfig("whisper_window", preset="tiny", overrides=TINY_WEAK_WHISPER),
        "hubert": EncoderConfig("hubert", preset="hubert-base", overrides=TINY_HUBERT),
        "beats": EncoderConfig("beats", overrides=TINY_BEATS),
        "speaker": EncoderConfig("speaker"),
        "pitch": EncoderConfig("pitch", preset="tiny"),
    }


ENCODER_PINS = {  # family: (shape, lengths, sum |features|, projection)
    "whisper": ((2, 50, 32), [50, 30], 2250.552, 25.65014),
    "whisper_window": ((2, 500, 32), [500, 500], 19525.11, 11.97035),
    "hubert": ((2, 49, 32), [49, 29], 2020.224, -76.16156),
    "beats": ((2, 48, 64), [48, 24], 3744.419, -6.90958),
    "speaker": ((2, 2, 256), [2, 2], 37.2878, -0.9019254),
    "pitch": ((2, 20, 360), [20, 12], 131.6535, 2.160924),
}


def _projection(t: torch.Tensor) -> float:
    return (t * torch.randn(t.shape, generator=torch.Generator().manual_seed(2))).sum().item()


@pytest.mark.parametrize("family", sorted(ENCODER_PINS))
def test_encoder_family_pinned(family):
    from mowe.builders import build_encoder

    torch.manual_seed(0)
    enc = build_encoder(_encoder_configs()[family], name=family).eval()
    waves = 0.1 * _inputs(2, 16000)
    waves[1, 9600:] = 0
    with torch.no_grad():
        out = enc(waves, torch.tensor([16000, 9600]))
    shape, lengths, abs_sum, proj = ENCODER_PINS[family]
    assert tuple(out.features.shape) == shape and out.lengths.tolist() == lengths
    assert out.features.abs().sum().item() == pytest.approx(abs_sum, rel=1e-5)
    assert _projection(out.features) == pytest.approx(proj, abs=1e-3 + 1e-5 * abs_sum)


def test_whole_model_forward_pinned():
    """Strong Whisper + a pool of two Whisper and two HuBERT weak encoders, routers, frame stacking, a tiny
    Llama with LoRA (tests/conftest.py's tiny_config): logits, loss and routing of one forward on three
       clips."""
    from conftest import make_batch, tiny_config

    from mowe.model import MoWEAudioLLM

    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(tiny_config()).eval()
    wav, wl, ids, am, labels = make_batch()
    with torch.no_grad():
        out = model(ids, wav, wl, attention_mask=am, labels=labels)
    assert tuple(out.logits.shape) == (3, 17, 128)
    assert out.router.indices.tolist() == [[3], [3], [3]]
    assert out.loss.item() == pytest.approx(4.954642, abs=1e-4)
    assert out.logits.abs().sum().item() == pytest.approx(836.4879, rel=1e-5)
    assert _projection(out.logits) == pytest.approx(24.66671, abs=1e-3)
