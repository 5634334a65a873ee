import torch

from mowe.align import align_to_grid


def test_equal_rates_are_identity_and_zero_padding():
    f = torch.randn(2, 6, 3)
    lens = torch.tensor([6, 4])
    out = align_to_grid(f, lens, src_rate=50, dst_rate=50, dst_lengths=lens, dst_len=6)
    torch.testing.assert_close(out[0], f[0])
    torch.testing.assert_close(out[1, :4], f[1, :4])
    assert out[1, 4:].abs().sum() == 0


def test_half_rate_source_is_upsampled_linearly_and_never_reads_padding():
    # A ramp at 25 Hz read onto a 50 Hz grid stays a ramp (linear interpolation), clamped at the clip's end.
    f = torch.arange(5, dtype=torch.float32).view(1, 5, 1).repeat(1, 1, 2)
    f = torch.cat([f, torch.full((1, 3, 2), 1e6)], dim=1)  # padding that must not leak in
    out = align_to_grid(
        f, torch.tensor([5]), src_rate=25, dst_rate=50, dst_lengths=torch.tensor([10]), dst_len=12
    )
    vals = out[0, :, 0].tolist()
    # target centre (j + .5) / 50 s reads source index (j + .5) / 2 - .5, clamped to [0, 4]
    assert vals[:10] == [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.0]
    assert max(vals) < 5 and vals[10:] == [0.0, 0.0]


def test_same_rate_different_lengths_stretches_within_clip():
    f = torch.randn(1, 49, 4)
    out = align_to_grid(
        f, torch.tensor([49]), src_rate=50, dst_rate=50, dst_lengths=torch.tensor([50]), dst_len=50
    )
    torch.testing.assert_close(out[0, :49], f[0])
    torch.testing.assert_close(out[0, 49], f[0, 48])
