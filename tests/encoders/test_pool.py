import pytest
import torch
from torch import nn

from mowe.encoders import EncoderOutput, WeakEncoderPool
from mowe.errors import MoWEInputError
from mowe.routers import RouterOutput


class Counting(nn.Module):
    """A 25 Hz toy encoder that records every call's batch size and sample count."""

    def __init__(self, out_dim=3, frame_rate=25.0, bad_width=False):
        super().__init__()
        self.out_dim, self.frame_rate, self.min_samples = out_dim, frame_rate, 1
        self.calls = []
        self.bad_width = bad_width
        self.proj = nn.Linear(1, out_dim)

    def forward(self, wav, lengths):
        self.calls.append((wav.shape[0], wav.shape[1]))
        hop = int(16000 / self.frame_rate)
        frames = wav[:, : wav.shape[1] // hop * hop].reshape(wav.shape[0], -1, hop).mean(-1, keepdim=True)
        feats = self.proj(frames)
        if self.bad_width:
            feats = torch.cat([feats, feats], -1)
        return EncoderOutput(feats, torch.div(lengths, hop, rounding_mode="floor"))


def _route(indices, e):
    indices = torch.tensor(indices)
    gates = torch.zeros(indices.shape[0], e).scatter(-1, indices, 0.5)
    probs = torch.full((indices.shape[0], e), 1 / e)
    return RouterOutput(
        logits=probs.log(), probs=probs, gates=gates, indices=indices, aux_loss=torch.tensor(1.0)
    )


def _run(pool, route, lengths=(16000, 8000, 4000, 3200)):
    g = torch.Generator().manual_seed(0)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = torch.randn(n, generator=g)
    lengths = torch.tensor(lengths)
    frames = torch.div(lengths, 320, rounding_mode="floor")
    return pool(wav, lengths, route, frame_rate=50.0, frame_lengths=frames, num_frames=int(frames.max()))


def test_sparse_dispatch_runs_each_encoder_once_on_only_its_clips():
    encs = {f"e{i}": Counting() for i in range(4)}
    pool = WeakEncoderPool(encoders=encs)
    out = _run(pool, _route([[2], [0], [2], [2]], 4))
    assert encs["e0"].calls == [(1, 8000)]  # one clip, trimmed to its own length
    assert encs["e2"].calls == [(3, 16000)]
    assert encs["e1"].calls == [] and encs["e3"].calls == []
    assert out.shape == (4, 50, 12)
    # Clip 1 chose e0 only: every other slot is zero.
    assert out[1, :, 3:].abs().sum() == 0 and out[1, :, :3].abs().sum() > 0


def test_top2_total_work_is_k_clips_per_clip():
    encs = {f"e{i}": Counting() for i in range(4)}
    pool = WeakEncoderPool(encoders=encs, top_k=2)
    _run(pool, _route([[0, 1], [1, 2], [2, 3], [3, 0]], 4))
    assert sum(b for e in encs.values() for b, _ in e.calls) == 8
    assert all(len(e.calls) == 1 for e in encs.values())


def test_topk_layout_puts_choices_in_slots_through_adapters():
    encs = {"a": Counting(out_dim=3), "b": Counting(out_dim=5)}
    pool = WeakEncoderPool(encoders=encs, layout="topk", top_k=1, slot_dim=4)
    out = _run(pool, _route([[0], [1], [0], [1]], 2))
    assert out.shape == (4, 50, 4)
    assert out[2, 12:].abs().sum() == 0 and out[2, :12].abs().sum() > 0  # clip 2: 4000 samples = 12 frames


def test_gates_scale_the_features():
    enc = Counting()
    pool = WeakEncoderPool(encoders={"a": enc})
    r = _route([[0]] * 4, 1)
    a = _run(pool, r)
    r.gates = r.gates * 2
    torch.testing.assert_close(_run(pool, r), a * 2)


def test_wrong_shape_from_an_encoder_names_it():
    pool = WeakEncoderPool(encoders={"good": Counting(), "broken": Counting(bad_width=True)})
    with pytest.raises(MoWEInputError, match="encoder 'broken' returned features of shape .*expected"):
        _run(pool, _route([[1]] * 4, 2))


def test_missing_protocol_attribute():
    with pytest.raises(MoWEInputError, match="lacks the attribute 'out_dim'"):
        WeakEncoderPool(encoders={"x": nn.Linear(2, 2)})


def _window_route(window_indices, e, frames):
    """A per-window decision: ``window_indices`` (b, w, k), -1 for windows past a clip's end; gates 0.5 + 0.1
    * w."""
    idx = torch.tensor(window_indices)
    mask = (idx >= 0).all(-1)
    idx = idx.clamp(min=0)
    b, w, _ = idx.shape
    gates = (
        torch.zeros(b, w, e).scatter(
            -1,
            idx,
            (0.5 + 0.1 * torch.arange(w, dtype=torch.float32))[None, :, None]
            .expand(b, w, idx.shape[-1])
            .contiguous(),
        )
        * mask[..., None]
    )
    probs = torch.full((b, w, e), 1 / e)
    clip = RouterOutput(
        logits=probs[:, 0].log(),
        probs=probs[:, 0],
        gates=gates.mean(1),
        indices=idx[:, 0],
        aux_loss=torch.tensor(1.0),
    )
    return RouterOutput(
        **{
            **clip.__dict__,
            "window_logits": probs.log(),
            "window_probs": probs,
            "window_gates": gates,
            "window_indices": idx,
            "window_mask": mask,
            "window_frames": frames,
        }
    )


@pytest.mark.parametrize("layout", ["fixed", "topk"])
@pytest.mark.parametrize("align", ["interpolate", "pad"])
def test_per_window_each_window_is_the_encoder_on_that_windows_audio(layout, align):
    """Clip 0 (1 s, two 0.5 s windows) sends its windows to e1 then e0; clip 1 (0.25 s, one window) to e0.
    Each window's frames are what the pool gives for that window's audio alone, routed per clip with the
       window's gate."""
    torch.manual_seed(0)
    encs = {f"e{i}": Counting() for i in range(2)}
    pool = WeakEncoderPool(encoders=encs, layout=layout, top_k=1, align=align)
    route = _window_route([[[1], [0]], [[0], [-1]]], 2, frames=25)
    out = _run(pool, route, lengths=(16000, 4000))
    assert encs["e0"].calls == [(2, 8000)] and encs["e1"].calls == [(1, 8000)]  # only their windows, trimmed
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(16000, generator=g)
    for j, (e, gate) in enumerate(((1, 0.5), (0, 0.6))):
        part = wav[8000 * j : 8000 * (j + 1)][None]
        one = _route([[e]], 2)
        one.gates = one.gates / 0.5 * gate
        want = pool(
            part, torch.tensor([8000]), one, frame_rate=50.0, frame_lengths=torch.tensor([25]), num_frames=25
        )
        torch.testing.assert_close(out[0, 25 * j : 25 * (j + 1)], want[0])
    assert out[1, 12:].abs().sum() == 0  # past clip 1's 12 frames
