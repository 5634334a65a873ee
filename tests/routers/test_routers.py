import pytest
import torch

from mowe.errors import MoWEInputError
from mowe.routers import DataDependentRouter, DataIndependentRouter, MixtureRouter, load_balance_loss


def _feats(b=4, t=10, d=16):
    return torch.randn(b, t, d), torch.tensor([10, 7, 3, 1][:b])


def test_independent_router_same_weights_for_every_clip():
    r = MixtureRouter(routers=[DataIndependentRouter(num_encoders=4)], num_encoders=4, top_k=2)
    with torch.no_grad():
        r.routers[0].logits.copy_(torch.tensor([0.1, 2.0, -1.0, 0.5]))
    out = r(*_feats())
    assert torch.equal(out.gates, out.gates[:1].expand_as(out.gates))
    assert out.indices.tolist() == [[1, 3]] * 4


def test_dependent_router_differs_between_clips():
    r = MixtureRouter(routers=[DataDependentRouter(in_dim=16, num_encoders=4)], num_encoders=4)
    out = r(*_feats())
    assert not torch.allclose(out.probs[0], out.probs[1])


def test_gates_are_sparse_and_carry_gradient_to_both_routers_even_at_top1():
    ind, dep = DataIndependentRouter(num_encoders=4), DataDependentRouter(in_dim=16, num_encoders=4)
    r = MixtureRouter(routers=[ind, dep], num_encoders=4, top_k=1)
    out = r(*_feats())
    assert ((out.gates > 0).sum(-1) == 1).all()
    (out.gates.sum() + 0 * out.aux_loss).backward()
    assert ind.logits.grad.abs().sum() > 0
    assert dep.net[-1].weight.grad.abs().sum() > 0


def test_padding_frames_do_not_change_routing():
    r = MixtureRouter(routers=[DataDependentRouter(in_dim=16, num_encoders=3)], num_encoders=3)
    f, lens = _feats()
    g = f.clone()
    g[1, 7:] = 100.0
    torch.testing.assert_close(r(f, lens).probs, r(g, lens).probs)


def test_noise_only_in_training():
    r = MixtureRouter(routers=[DataDependentRouter(in_dim=16, num_encoders=4)], num_encoders=4, noise_std=1.0)
    f, lens = _feats()
    r.eval()
    torch.testing.assert_close(r(f, lens).logits, r(f, lens).logits)
    r.train()
    assert not torch.allclose(r(f, lens).logits, r(f, lens).logits)


def test_load_balance_loss_is_one_when_uniform_and_grows_when_collapsed():
    probs = torch.full((8, 4), 0.25)
    uniform = torch.arange(8).remainder(4)[:, None]
    assert load_balance_loss(probs, uniform).item() == pytest.approx(1.0)
    collapsed_p = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).expand(8, 4)
    assert load_balance_loss(collapsed_p, torch.zeros(8, 1, dtype=torch.long)).item() > 3.5


def test_bad_top_k():
    with pytest.raises(MoWEInputError, match="top_k=5"):
        MixtureRouter(routers=[DataIndependentRouter(num_encoders=4)], num_encoders=4, top_k=5)
