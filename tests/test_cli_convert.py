"""``mowe convert``: one sub-command per entry of the converter registry, built from its description, with the
arguments its loader takes (a mismatch would fail only when someone converts a real checkpoint)."""

import argparse
import inspect

import pytest

from mowe.cli_convert import add_convert_cli
from mowe.presets import CONVERTERS


def _parser():
    parser = argparse.ArgumentParser(prog="mowe")
    add_convert_cli(parser.add_subparsers(dest="command"))
    return parser


def test_the_command_line_spellings_stay(capsys):
    assert sorted(CONVERTERS) == ["ltu-as", "salmonn"]
    for name in ("whisper", "salmonn", "ltu-as"):
        with pytest.raises(SystemExit) as e:
            _parser().parse_args(["convert", name, "--help"])
        assert e.value.code == 0 and f"usage: mowe convert {name}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["convert", "ltu_as", "x"])
    assert e.value.code == 2 and "invalid choice: 'ltu_as'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_every_argument_reaches_the_loader_by_its_keyword(name):
    conv = CONVERTERS[name]
    sub = argparse.ArgumentParser()
    dests = {sub.add_argument(*a.flags, **a.options).dest for a in conv.arguments}
    params = inspect.signature(conv.load).parameters
    assert dests - {"out"} == set(params), f"{name}: arguments {sorted(dests)} vs loader {sorted(params)}"
    assert "checkpoint" in dests and "out" in dests


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_required_arguments_are_named_when_missing(name, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["convert", name, "ckpt.bin"])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err
