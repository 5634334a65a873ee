"""mowe.tensors: masks from lengths, length groups and their padding budget."""

import math

import pytest
import torch

from mowe.errors import MoWEInputError
from mowe.tensors import (
    AUTO_BUCKET_PADDING,
    DTYPES,
    check_bucket_padding,
    length_groups,
    lengths_to_mask,
    resolve_bucket_padding,
)


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([3, 0, 1]), 4)
    assert mask.dtype == torch.bool and mask.tolist() == [
        [True, True, True, False],
        [False] * 4,
        [True, False, False, False],
    ]


@pytest.mark.parametrize("max_padding", [0.0, 0.1, 0.25, 1.0])
def test_groups_cover_every_clip_once_and_respect_the_padding_budget(max_padding):
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 1000, (50,), generator=g).tolist()
    groups = length_groups(lengths, max_padding)
    assert sorted(i for grp in groups for i in grp) == list(range(50))
    for grp in groups:
        real = sum(lengths[i] for i in grp)
        assert len(grp) * max(lengths[i] for i in grp) <= (1 + max_padding) * real + 1e-9
    padded = sum(len(grp) * max(lengths[i] for i in grp) for grp in groups)
    assert padded <= (1 + max_padding) * sum(lengths)
    # Longest clip first, so an out-of-memory shows on the first group.
    assert groups[0][0] == max(range(50), key=lambda i: lengths[i])


def test_group_edge_cases():
    assert length_groups([5, 5, 5], 0.0) == [[0, 1, 2]]
    assert length_groups([7, 3, 9], math.inf) == [[2, 0, 1]]
    assert length_groups([7, 3, 9], 0.0) == [[2], [0], [1]]


def test_padding_budget_is_checked_and_resolved_per_device():
    assert check_bucket_padding(1) == 1.0 and isinstance(check_bucket_padding(1), float)
    assert check_bucket_padding("auto") == "auto" and check_bucket_padding(None) is None
    for bad in (-0.1, float("nan"), "tight", True):
        with pytest.raises(MoWEInputError, match=r"^padding must be a fraction >= 0"):
            check_bucket_padding(bad, name="padding")
    assert resolve_bucket_padding("auto", torch.device("cpu")) == AUTO_BUCKET_PADDING["cpu"]
    assert resolve_bucket_padding("auto", torch.device("meta")) == AUTO_BUCKET_PADDING["other"]
    assert DTYPES["bfloat16"] is torch.bfloat16 and set(DTYPES) == {"float32", "bfloat16", "float16"}
