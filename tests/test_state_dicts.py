"""mowe.state_dicts: which keys of a module name one tensor, and checking a file that repeats them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mowe.errors import CheckpointError
from mowe.state_dicts import alias_groups, check_aliases, check_frozen_copies, peft_base_key, tensors_equal


def _tied() -> nn.Module:
    torch.manual_seed(0)
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied, as an LLM's embed_tokens / lm_head
    return nn.ModuleDict({"embed": emb, "head": head, "other": nn.Linear(3, 3)})


def test_alias_groups_lists_each_shared_tensor_once_source_first():
    assert alias_groups(_tied()) == [("embed.weight", "head.weight")]
    assert alias_groups(_tied(), prefix="llm.") == [("llm.embed.weight", "llm.head.weight")]
    assert alias_groups(nn.Linear(2, 2)) == []


def test_tensors_equal_compares_in_the_models_dtype_and_nans_equal():
    a = torch.tensor([1.0, float("nan"), 1 + 2**-12])
    assert tensors_equal(a, a.clone())
    assert tensors_equal(a, a.to(torch.bfloat16))  # the float32 file's values rounded as the model holds them
    assert tensors_equal(a, a.to(torch.float64))  # widening is exact
    assert not tensors_equal(a.to(torch.float64) + 2**-30, a.to(torch.float64))  # any other value differs
    assert not tensors_equal(a[:2], a)


def test_check_aliases_names_the_alias_that_differs_and_fills_the_missing_ones():
    model = _tied()
    state = model.state_dict()
    groups = alias_groups(model)
    assert check_aliases(state, groups, where="f.bin").keys() == state.keys()
    bad = {**state, "head.weight": state["head.weight"] + 1}
    with pytest.raises(CheckpointError, match=r"f\.bin: head\.weight differs from embed\.weight \(max abs "):
        check_aliases(bad, groups, where="f.bin")
    only_source = {k: v for k, v in state.items() if k != "head.weight"}
    filled = check_aliases(only_source, groups, where="f.bin", fill=True)
    assert filled["head.weight"] is state["embed.weight"]
    # without the source, the module's own value is the reference
    alias_only = {"head.weight": state["embed.weight"] * 2}
    with pytest.raises(CheckpointError, match=r"its source, as loaded into the model"):
        check_aliases(alias_only, groups, where="f.bin", current=state)


def test_check_frozen_copies_and_peft_keys():
    model = _tied()
    own = model.state_dict()
    check_frozen_copies({"other.bias": own["other.bias"].clone()}, model, where="f.bin")
    with pytest.raises(CheckpointError, match=r"f\.bin: tower\.nope names no tensor of the tower"):
        check_frozen_copies({"nope": torch.zeros(1)}, model, where="f.bin", prefix="tower.", what="the tower")
    with pytest.raises(CheckpointError, match=r"other\.bias"):
        check_frozen_copies({"other.bias": own["other.bias"] + 1}, model, where="f.bin")
    keys = {"q_proj.base_layer.weight", "k_proj.weight"}
    assert peft_base_key("q_proj.weight", keys) == "q_proj.base_layer.weight"
    assert peft_base_key("k_proj.weight", keys) == "k_proj.weight" and peft_base_key("v.weight", keys) is None
