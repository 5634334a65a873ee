"""The README's quickstart is executed as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_starts_with_the_two_commands():
    head = README.read_text().split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_quickstart_trains_one_step_and_generates(capsys):
    code = _block("## Quickstart")
    scope: dict = {}
    exec(compile(code, str(README) + ":quickstart", "exec"), scope)
    out = capsys.readouterr().out
    assert "loss" in out and "weak encoder chosen per clip" in out
    assert scope["new_tokens"].shape[0] == 2 and 1 <= scope["new_tokens"].shape[1] <= 5
    assert scope["out"].router.gates.shape == (2, 4)
    trained = [p for p in scope["model"].parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in scope["connector"].parameters())


def test_where_things_are_names_every_module_of_the_tree():
    section = README.read_text().split("## Where things are", 1)[1].split("\n## ", 1)[0]
    tree = re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)
    pkg = README.parent / "mowe"
    named = set(re.findall(r"[\w]+\.py|[\w]+/", tree))
    missing = [p.name for p in pkg.glob("*.py") if p.name not in named]
    missing += [
        f"{d.name}/" for d in pkg.iterdir() if (d / "__init__.py").exists() and f"{d.name}/" not in named
    ]
    for sub in (
        "hf",
        "training",
        "data",
        "encoders",
        "connectors",
        "routers",
        "checkpoints",
        "serve",
        "demo",
        "salmonn",
        "ltu_as",
    ):
        missing += [
            f"{sub}/{p.name}"
            for p in (pkg / sub).glob("*.py")
            if p.name != "__init__.py" and p.name not in named
        ]
    assert not missing, f"README 'Where things are' does not name {missing}"
