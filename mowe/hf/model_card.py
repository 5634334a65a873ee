"""The README.md model card mowe writes beside every saved model.

:func:`model_card` generates the card from the model's :class:`~mowe.config.MoWEConfig` and a
:class:`CardInfo`:

* YAML metadata huggingface_hub's ``ModelCard`` parses: ``library_name: mowe``, ``tags``, ``base_model`` (the
  LLM,
  when loaded from a hub id or folder), ``datasets`` (the training data's names) and a ``model-index`` block
  with the evaluation results (one entry per dataset, task and metric, the interval and n in its name);
* the body: the architecture (the strong and weak encoders with their families and weight sources, the router,
  the connector, the LLM and the LoRA), the training data and a results table.

:class:`CardInfo` travels with the model (``model.card_info``): ``mowe train`` records the training data,
``mowe eval --update-card`` (or ``model.card_info.add_results``) the results; ``save_pretrained`` writes
``README.md`` and ``mowe_card.json`` (the info itself, read back by ``from_pretrained``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from mowe.config import EncoderConfig, MoWEConfig
from mowe.errors import CheckpointError
from mowe.hub import looks_like_path

__all__ = [
    "CARD_INFO_NAME",
    "README_NAME",
    "CardInfo",
    "CardResult",
    "model_card",
    "read_card_info",
    "write_model_card",
]

README_NAME = "README.md"
CARD_INFO_NAME = "mowe_card.json"
TASK_TYPE = "audio-text-to-text"  # the hub's pipeline type for audio + text in, text out


@dataclass
class CardResult:
    """One evaluation figure: ``metric`` (``accuracy``, ``wer``, ``bleu``) of ``task`` on ``dataset`` (its
    ``split``), with ``n`` clips and the bootstrap interval ``ci`` (``[low, high]``, or None)."""

    dataset: str
    task: str
    metric: str
    value: float
    n: int | None = None
    ci: list[float] | None = None
    split: str | None = None
    scoring: str | None = None  # e.g. "mmau" (the benchmark's rule); None: mowe's per-task metric

    def eval_result(self, model_name: str) -> EvalResult:
        ci = f", 95% CI [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else ""
        n = f", n={self.n}" if self.n is not None else ""
        rule = f" ({self.scoring} scoring)" if self.scoring else ""
        # The task is the dataset's config (subset): model-index groups results by task type, dataset, config
        # and
        # split, so each mowe task keeps its own entry (and its task_name).
        return EvalResult(
            task_type=TASK_TYPE,
            task_name=self.task,
            dataset_type=self.dataset,
            dataset_name=self.dataset,
            dataset_config=self.task,
            dataset_split=self.split,
            metric_type=self.metric,
            metric_value=round(float(self.value), 6),
            metric_name=f"{self.task} {self.metric}{rule}{n}{ci}",
        )


@dataclass
class CardInfo:
    """What the card says beyond the config: the training data and the evaluation results."""

    training_data: list[str] = field(default_factory=list)
    results: list[CardResult] = field(default_factory=list)

    def add_results(self, results: Iterable[CardResult | Mapping[str, Any]]) -> None:
        """Add results, replacing earlier ones for the same dataset, split, task and metric."""
        for r in results:
            r = r if isinstance(r, CardResult) else CardResult(**r)
            self.results = [
                x
                for x in self.results
                if (x.dataset, x.split, x.task, x.metric) != (r.dataset, r.split, r.task, r.metric)
            ] + [r]

    def to_dict(self) -> dict[str, Any]:
        return {"training_data": list(self.training_data), "results": [asdict(r) for r in self.results]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CardInfo:
        return cls(list(d.get("training_data") or []), [CardResult(**r) for r in d.get("results") or []])


def read_card_info(directory: str | os.PathLike) -> CardInfo:
    """``mowe_card.json`` of a saved model folder (an empty CardInfo when there is none)."""
    path = os.path.join(os.fspath(directory), CARD_INFO_NAME)
    if not os.path.isfile(path):
        return CardInfo()
    try:
        with open(path, encoding="utf-8") as f:
            return CardInfo.from_dict(json.load(f))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a mowe card file ({e})") from e


def _encoder(name: str, e: EncoderConfig) -> str:
    source = e.name_or_path or (f"random weights, preset {e.preset!r}" if e.preset else "random weights")
    extra = f"; component `{e.component}`" if e.component else ""
    return f"| {name} | {e.family} | {source} | {'frozen' if e.freeze else 'trainable'}{extra} |"


def _architecture(cfg: MoWEConfig) -> list[str]:
    r, c, llm, lora = cfg.router, cfg.connector, cfg.llm, cfg.lora
    rows = [
        "| part | kind | weights from | in training (config) |",
        "|---|---|---|---|",
        _encoder("strong encoder", cfg.strong),
    ]
    rows += [_encoder(f"weak encoder `{n}`", e) for n, e in cfg.weak_encoders.items()]
    if cfg.weak_encoders:
        kinds = "+".join(
            k
            for k, on in (("data-independent", r.data_independent), ("data-dependent", r.data_dependent))
            if on
        )
        prompt = ", prompt-aware" if r.prompt_aware else ""
        rows.append(
            f"| router | {kinds}{prompt}, top-{r.top_k} of {len(cfg.weak_encoders)} | random init "
            "| trainable |"
        )
    options = ", ".join(f"{k}={v}" for k, v in c.options.items())
    kind = f"{c.component or c.kind}{f' ({options})' if options else ''}"
    rows.append(f"| connector | {kind} | random init | trainable |")
    if llm.name_or_path:
        source = llm.name_or_path + (f" (GGUF `{llm.gguf_file}`)" if llm.gguf_file else "")
    else:
        conf = llm.config or {}
        source = f"random weights ({conf.get('model_type', '?')}, hidden {conf.get('hidden_size', '?')})"
    rows.append(f"| LLM | causal LM | {source} | {llm.train} |")
    if llm.train == "lora":
        targets = ", ".join(lora.target_modules) if lora.target_modules else "the LLM's default targets"
        rows.append(
            f"| LoRA | r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout} | on {targets} | trainable |"
        )
    return rows


def model_card(config: MoWEConfig, info: CardInfo | None = None, *, model_name: str = "mowe-model") -> str:
    """The README.md text: YAML metadata (with a ``model-index`` when there are results) and the body."""
    info = info or CardInfo()
    name = config.llm.name_or_path
    base = name if name and not looks_like_path(name) and not os.path.exists(name) else None  # hub ids only
    data = ModelCardData(
        library_name="mowe",
        model_name=model_name,
        base_model=base,
        datasets=list(info.training_data) or None,
        tags=["audio", "audio-llm", "mowe"],
        pipeline_tag=TASK_TYPE,
        eval_results=[r.eval_result(model_name) for r in info.results] or None,
    )
    body = [
        f"# {model_name}",
        "",
        "An audio LLM built with mowe from a mixture of weak encoders: the strong "
        "encoder's features and the routed weak encoders' are aligned, concatenated, passed through the "
        "connector and given to the LLM in place of the audio placeholder.",
        "",
        "## Architecture",
        "",
        *_architecture(config),
        "",
        "## Training data",
        "",
    ]
    body += [f"- {d}" for d in info.training_data] or ["Not recorded."]
    body += ["", "## Evaluation", ""]
    if info.results:
        body += [
            "| dataset | task | metric | value | 95% interval | n | scoring |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in info.results:
            ci = f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci else "–"
            body.append(
                f"| {r.dataset}{f' ({r.split})' if r.split else ''} | {r.task} | {r.metric} | "
                f"{r.value:.3f} | {ci} | {r.n if r.n is not None else '–'} | {r.scoring or 'mowe'} |"
            )
    else:
        body.append("No results recorded (`mowe eval --update-card` adds them).")
    body += [
        "",
        "## Use",
        "",
        "```python",
        "from mowe import MoWEAudioLLM",
        "from mowe.data.processor import MoWEProcessor",
        "",
        f'model = MoWEAudioLLM.from_pretrained("{model_name}")',
        f'processor = MoWEProcessor.from_pretrained("{model_name}")',
        "```",
        "",
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def write_model_card(
    directory: str | os.PathLike,
    config: MoWEConfig,
    info: CardInfo | None = None,
    *,
    model_name: str | None = None,
) -> str:
    """Write ``README.md`` and ``mowe_card.json`` into a model folder; returns the README's path."""
    directory = os.fspath(directory)
    info = info or CardInfo()
    name = model_name or os.path.basename(os.path.normpath(os.path.abspath(directory)))
    with open(os.path.join(directory, CARD_INFO_NAME), "w", encoding="utf-8") as f:
        json.dump(info.to_dict(), f, indent=1)
    path = os.path.join(directory, README_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(model_card(config, info, model_name=name))
    return path
