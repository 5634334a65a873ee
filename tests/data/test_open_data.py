"""open_dataset: a manifest or a dataset by what the path is; columns named per field or as constants."""

from __future__ import annotations

import pytest
from _hf_helpers import save_hf_dataset, write_corpus

from mowe.data.open_data import open_dataset, parse_column_args
from mowe.errors import ConfigError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("opendata"))


def test_columns_are_named_in_the_run_file_or_constants(corpus, tmp_path):
    save_hf_dataset(corpus, tmp_path / "r", rename={"answer": "label", "instruction": "question"})
    with pytest.raises(ConfigError, match=r"answer -> 'answer'.*columns:"):
        open_dataset(tmp_path / "r")
    ds = open_dataset(
        tmp_path / "r", columns={"answer": "label", "instruction": "question", "task": "=tones"}
    )
    assert (
        ds.task_names == ["tones"]
        and ds[0]["answer"] == "low"
        and ds[0]["instruction"] == "Which tone is it?"
    )
    assert parse_column_args(["answer=label", "task==asr"]) == {"answer": "label", "task": "=asr"}
    with pytest.raises(ConfigError, match="--column 'nope'"):
        parse_column_args(["nope"])
    with pytest.raises(ConfigError, match="unknown field"):
        parse_column_args(["label=answer"])
    with pytest.raises(ConfigError, match="JSONL manifest"):
        open_dataset(corpus["manifest"], columns={"answer": "x"})
