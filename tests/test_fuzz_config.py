"""Fuzzing the config loader: any JSON (or non-JSON) gives a MoWEConfig or a ConfigError, nothing else."""

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mowe.config import MoWEConfig, to_dict
from mowe.errors import ConfigError

EXAMPLES = int(os.environ.get("MOWE_FUZZ_EXAMPLES", "150"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(
    ["strong", "weak_encoders", "router", "connector", "llm", "lora", "audio_token_id", "bogus"]
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=5))
def test_random_documents(doc):
    try:
        cfg = MoWEConfig.from_json(json.dumps(doc))
    except ConfigError:
        return
    assert MoWEConfig.from_json(cfg.to_json()) == cfg


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=64))
def test_random_files(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("cfg") / "c.json"
    p.write_bytes(data)
    try:
        MoWEConfig.from_json(p)
    except ConfigError:
        pass


def test_round_trip_and_unknown_key_named():
    cfg = MoWEConfig()
    assert MoWEConfig.from_json(cfg.to_json()) == cfg
    d = to_dict(cfg)
    d["router"]["top_kk"] = 2
    try:
        MoWEConfig.from_json(json.dumps(d))
    except ConfigError as e:
        assert "unknown key 'top_kk'" in str(e) and ".router" in str(e)
    else:
        raise AssertionError("unknown key accepted")
