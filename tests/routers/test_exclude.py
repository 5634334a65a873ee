"""Removing a weak encoder from the router (the demo's ablation): never chosen; other clips unchanged."""

import pytest
import torch
from conftest import make_batch, tiny_config

from mowe import MoWEAudioLLM
from mowe.errors import MoWEInputError
from mowe.routers import DataDependentRouter, MixtureRouter


def _router(top_k=1):
    torch.manual_seed(0)
    return MixtureRouter(
        routers=[DataDependentRouter(in_dim=8, num_encoders=4, hidden_dim=16)], num_encoders=4, top_k=top_k
    ).eval()


@pytest.mark.parametrize("top_k", [1, 2])
def test_excluded_encoder_is_never_chosen_and_other_clips_keep_their_choice(top_k):
    r = _router(top_k)
    x, lens = torch.randn(64, 5, 8), torch.full((64,), 5)
    full = r(x, lens)
    favourite = int(full.indices[:, 0].mode().values)
    r.exclude([favourite])
    cut = r(x, lens)
    assert not (cut.indices == favourite).any()
    untouched = ~(full.indices == favourite).any(-1)
    assert untouched.any() and (~untouched).any()
    assert torch.equal(cut.indices[untouched], full.indices[untouched])
    assert torch.equal(cut.gates[untouched], full.gates[untouched])
    assert torch.equal(cut.probs, full.probs)  # the router's own scores are not changed, only the choice
    # a clip that lost its encoder is gated by the next one's own probability
    moved = (~untouched).nonzero()[0, 0]
    j = cut.indices[moved, 0]
    assert cut.gates[moved, j] == full.probs[moved, j]
    r.exclude(())
    assert torch.equal(r(x, lens).indices, full.indices)


def test_exclude_refuses_bad_indices_and_an_empty_pool():
    r = _router(top_k=2)
    with pytest.raises(MoWEInputError, match=r"outside the pool of 4"):
        r.exclude([4])
    with pytest.raises(MoWEInputError, match="fewer than top_k=2"):
        r.exclude([0, 1, 2])


def test_model_without_encoders_by_name_restores_afterwards():
    model = MoWEAudioLLM.from_config(tiny_config()).eval()
    wav, lens, ids, am, _ = make_batch()
    with torch.no_grad():
        base = model.encode_audio(wav, lens)
        chosen = model.weak_encoders.names[int(base.router.indices[0, 0])]
        with model.without_encoders([chosen]):
            cut = model.encode_audio(wav, lens)
        after = model.encode_audio(wav, lens)
    assert model.weak_encoders.names.index(chosen) not in cut.router.indices.flatten().tolist()
    assert not torch.equal(cut.embeds[0], base.embeds[0])  # clip 0 now hears another encoder
    assert torch.equal(after.embeds, base.embeds) and model.router.excluded == frozenset()
    with (
        pytest.raises(MoWEInputError, match=r"\['nope'\] not in the weak pool"),
        model.without_encoders(["nope"]),
    ):
        pass
    base_only = MoWEAudioLLM.from_config(tiny_config(weak=False))
    with pytest.raises(MoWEInputError, match="no weak pool"), base_only.without_encoders(["x"]):
        pass
