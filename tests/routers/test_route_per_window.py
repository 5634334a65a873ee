"""route_per_window: every window routed on its own, by every kind of router; clip-level is one window."""

import pytest
import torch

from mowe.errors import MoWEInputError
from mowe.routers import (
    DataDependentRouter,
    DataIndependentRouter,
    MixtureRouter,
    PromptAwareRouter,
    RouterOutput,
    load_balance_loss,
    masked_mean,
    route_per_window,
)


def _mixture(top_k=1, prompt=False):
    torch.manual_seed(0)
    dep = (
        PromptAwareRouter(in_dim=8, prompt_dim=6, num_encoders=3, hidden_dim=16)
        if prompt
        else DataDependentRouter(in_dim=8, num_encoders=3, hidden_dim=16)
    )
    r = MixtureRouter(routers=[DataIndependentRouter(num_encoders=3), dep], num_encoders=3, top_k=top_k)
    with torch.no_grad():
        for p in r.parameters():
            p.add_(torch.randn_like(p))
    return r.eval()


def _features():
    torch.manual_seed(1)
    f = torch.randn(3, 23, 8)
    return f, torch.tensor([23, 10, 4])


@pytest.mark.parametrize("top_k", [1, 2])
def test_each_window_is_routed_as_a_clip_of_its_frames(top_k):
    r = _mixture(top_k)
    f, lens = _features()
    out = route_per_window(r, f, lens, window_frames=5)
    assert out.window_indices.shape == (3, 5, top_k) and out.window_gates.shape == (3, 5, 3)
    assert out.window_mask.tolist() == [[True] * 5, [True, True, False, False, False], [True] + [False] * 4]
    assert out.window_frames == 5
    for i in range(3):
        for j in range(int(out.window_mask[i].sum())):
            n = min(5, int(lens[i]) - 5 * j)
            alone = r(f[i : i + 1, 5 * j : 5 * j + n], torch.tensor([n]))
            assert torch.equal(out.window_indices[i, j], alone.indices[0])
            torch.testing.assert_close(out.window_gates[i, j], alone.gates[0])
    assert not out.window_gates[~out.window_mask].any()  # windows past a clip's end carry nothing
    # Clip summaries: mean over the clip's windows; indices are the largest mean gates.
    torch.testing.assert_close(out.gates[1], out.window_gates[1, :2].mean(0))
    assert out.indices.shape == (3, top_k)


def test_the_load_balance_loss_is_over_windows():
    r = _mixture()
    f, lens = _features()
    out = route_per_window(r, f, lens, window_frames=5)
    m = out.window_mask
    assert torch.allclose(out.aux_loss, load_balance_loss(out.window_probs[m], out.window_indices[m]))


def test_one_window_per_clip_is_the_clip_level_decision():
    r = _mixture(2)
    f, lens = _features()
    clip = r(f, lens)
    win = route_per_window(r, f, lens, window_frames=23)
    assert win.window_indices.shape[1] == 1
    assert torch.equal(win.indices, clip.indices)
    torch.testing.assert_close(win.gates, clip.gates)
    torch.testing.assert_close(win.aux_loss, clip.aux_loss)
    one = clip.per_window()  # the clip-level output with a window axis of one
    assert one.frames is None and one.indices.shape == (3, 1, 2) and bool(one.mask.all())


def test_prompt_aware_routing_per_window_gives_each_window_its_clips_prompt():
    r = _mixture(prompt=True)
    f, lens = _features()
    prompt = torch.randn(3, 6)
    out = route_per_window(r, f, lens, window_frames=5, prompt=prompt)
    alone = r(f[1:2, 5:10], torch.tensor([5]), prompt[1:2])
    torch.testing.assert_close(out.window_gates[1, 1], alone.gates[0])
    with pytest.raises(MoWEInputError, match="prompt-aware"):
        route_per_window(r, f, lens, window_frames=5)


def test_gradient_reaches_the_routers_through_window_gates():
    r = _mixture().train()
    f, lens = _features()
    out = route_per_window(r, f, lens, window_frames=5)
    (out.window_gates.sum() + out.aux_loss).backward()
    assert r.routers[1].net[-1].weight.grad.abs().sum() > 0


def test_a_router_that_ignores_the_window_axis_is_named():
    class ClipOnly(torch.nn.Module):
        def forward(self, features, lengths):
            pooled = masked_mean(features, lengths)[:1]  # one row, whatever it is given
            probs = pooled[:, :3].softmax(-1)
            idx = probs.topk(1).indices
            return RouterOutput(probs, probs, probs, idx, torch.zeros(()))

    f, lens = _features()
    with pytest.raises(
        MoWEInputError,
        match=r"router ClipOnly: per window, logits must have one row per window "
        r"\(8\)",
    ):
        route_per_window(ClipOnly(), f, lens, window_frames=5)
