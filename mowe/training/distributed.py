"""Training on many processes: one loss over the global batch, FSDP2 sharding (verified), launcher checks.

**Loss of a global batch.** A global batch is every process's micro-batches of one optimizer step. Its LM loss
is the summed token loss over all its answer tokens divided by their global count ``G`` (whatever the split
over processes ``W`` and accumulation micro-steps ``A``). Before a step, :func:`global_token_count` sums the
label tokens of the step's micro-batches over processes; each micro-batch's forward then gets
``num_items_in_batch=G`` and returns ``lm_loss = local_sum / G``. DDP and FSDP2 *average* gradients over the
``W`` processes and accelerate divides each backward by ``A``, so the backward objective of a micro-batch is
``W * A * lm_loss + aux_weight * aux_loss`` (:func:`backward_objective`): the gradients then equal those of
``G``-normalised LM loss + ``aux_weight`` x the mean of the micro-batches' load-balance losses. DeepSpeed
scales by ``1 / A`` in its own backward and averages over ``W`` too, so the same objective holds there.

**Router load-balance loss.** It stays per micro-batch and per process, averaged (as the Switch Transformer
and transformers' MoE models do per device): the loss is a product of two batch statistics (selection fraction
x mean probability), so a global version would need an autograd all-reduce inside every forward and could not
span accumulation micro-steps, whose graphs are not alive at the same time. Tests compare ``loss`` with aux
weight 0 and ``lm_loss`` otherwise.

**FSDP2.** :func:`shard_model` applies ``torch.distributed.fsdp.fully_shard`` to every LLM decoder layer, the
LLM, the connector, the router and the root; the encoders are left out (``ignored_params``) and replicated:
they are frozen feature extractors, weak encoders run only on the clips routed to them (a sharded one would
need every process to run it), and a feature cache skips their forward on some processes. A stage that trains
an encoder under FSDP is refused (:func:`verify_sharded`). accelerate applies FSDP only on accelerators (on
the CPU ``--use_fsdp`` silently gives DDP), so mowe shards the model itself whenever FSDP is asked for and
checks that every trainable parameter is a ``DTensor``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mowe.constants import IGNORE_INDEX
from mowe.errors import ConfigError, MoWEInputError
from mowe.hf import saving

__all__ = [
    "DistributedSetupError",
    "backward_objective",
    "check_launch",
    "clip_grad_norm",
    "count_label_tokens",
    "export_final",
    "forward_backward",
    "fsdp_requested",
    "full_state_dict",
    "global_token_count",
    "is_sharded",
    "place_model",
    "shard_model",
    "verify_sharded",
]


class DistributedSetupError(ConfigError):
    """Multi-process training is not set up as asked (a launcher started fewer processes, FSDP not
    applied)."""


# ----------------------------------------------------------------------------------------------- launcher
CPU_DDP_COMMAND = (
    "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N --num_machines 1 "
    "--mixed_precision no --dynamo_backend no -m mowe train --config run.yaml"
)


def _parent_num_processes(cmdline: Sequence[str]) -> int | None:
    """``--num_processes N`` / ``--nproc_per_node N`` of a launcher's command line (None when absent)."""
    for i, arg in enumerate(cmdline):
        for flag in ("--num_processes", "--nproc_per_node", "--nproc-per-node"):
            if arg == flag and i + 1 < len(cmdline):
                value = cmdline[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            return int(value) if value.isdigit() else None
    return None


def _read_parent_cmdline() -> list[str]:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def check_launch(
    num_processes: int,
    *,
    environ: Mapping[str, str] | None = None,
    parent_cmdline: Sequence[str] | None = None,
) -> None:
    """Raise when a launcher asked for several processes and this run got ``num_processes`` (1).

    ``accelerate launch --cpu --num_processes 2`` starts *one* process without a word (several CPU processes
    need mpirun there); it still exports ``MASTER_ADDR`` but no ``WORLD_SIZE``. torchrun's ``WORLD_SIZE`` is
    compared too, and the parent process's ``--num_processes`` / ``--nproc_per_node``.

    Raises:
        DistributedSetupError: naming what was asked, what was started, and the command that works.
    """
    env = os.environ if environ is None else environ
    asked = None
    if env.get("WORLD_SIZE", "").isdigit() and int(env["WORLD_SIZE"]) > num_processes:
        asked = int(env["WORLD_SIZE"])
    else:
        cmd = _read_parent_cmdline() if parent_cmdline is None else list(parent_cmdline)
        n = _parent_num_processes(cmd) if any("accelerate" in a or "torch" in a for a in cmd) else None
        if n is not None and n > num_processes:
            asked = n
        elif (
            num_processes == 1
            and "MASTER_ADDR" in env
            and "WORLD_SIZE" not in env
            and env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        ):
            asked = -1  # accelerate's simple launcher with --cpu and --num_processes > 1
    if asked is None:
        return
    said = "several" if asked < 0 else str(asked)
    raise DistributedSetupError(
        f"the launcher asked for {said} processes but this run has {num_processes}: `accelerate launch --cpu "
        f"--num_processes N` starts one process unless mpirun is set up. On CPUs run:\n  {CPU_DDP_COMMAND}\n"
        f"(--multi_gpu runs torchrun; ACCELERATE_USE_CPU=1 puts its processes on the CPU with gloo)"
    )


# ----------------------------------------------------------------------------------------------- loss
def count_label_tokens(batch: Mapping[str, Any]) -> int:
    """Answer tokens of a batch that carry a loss: labels ``(b, L)`` != -100 after the causal shift."""
    labels = batch.get("labels")
    if labels is None or len(labels) == 0:
        return 0
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def global_token_count(accelerator: Any, batches: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Label tokens of this process's micro-batches of one step, summed over processes: a float64 scalar
    ``G``."""
    t = torch.tensor(
        [float(sum(count_label_tokens(b) for b in batches if b))],
        dtype=torch.float64,
        device=accelerator.device,
    )
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t[0].clamp(min=1.0)


def backward_objective(out: Any, *, num_processes: int, grad_accum: int) -> torch.Tensor:
    """What a micro-batch back-propagates when its ``lm_loss`` is ``local_sum / G`` (see the module
    docstring).

    ``out.loss = lm_loss + w * aux``; returns ``W * A * lm_loss + w * aux`` (accelerate divides by ``A`` and
    DDP / FSDP average over ``W``).
    """
    lm = getattr(out, "lm_loss", None)
    if lm is None:
        return out.loss
    return out.loss + (num_processes * grad_accum - 1) * lm


def _f(t: Any) -> float | None:
    return None if t is None else float(t.detach()) if torch.is_tensor(t) else float(t)


def forward_backward(
    accelerator: Any,
    wrapped: nn.Module,
    stream: Iterator[dict[str, Any]],
    *,
    grad_accum: int,
    inputs: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[bool, list[Any], list[tuple[float, float | None, float | None]], int]:
    """Forward + backward over ``grad_accum`` micro-batches of ``stream``.

    A model whose ``forward`` takes ``num_items_in_batch`` gets the step's global answer-token count, so the
    step's LM loss is the sum over all its answer tokens / their count across processes and micro-batches
    (:mod:`mowe.training.distributed`); other models back-propagate the mean of their micro-batch losses.

    Returns:
        ``(non-finite loss on any process?, ids of the non-finite batches, (loss, lm_loss, aux_loss) per
        micro-batch, examples seen)``; a :class:`~mowe.training.logging.LossWindow` mean over the
        micro-batches of all processes gives the global batch's loss (the ``num_items_in_batch`` parts are
        scaled for it).
    """
    acc = accelerator
    bad, ids, losses, samples = False, [], [], 0
    batches = [next(stream) for _ in range(grad_accum)]
    full = [i for i, b in enumerate(batches) if b and len(b.get("input_ids", [])) > 0]
    if len(full) < len(batches) and acc.num_processes > 1:
        raise MoWEInputError(
            "the collator returned an empty batch (every example in it was skipped); "
            "in multi-process training every process needs examples: clean the data "
            "or raise batch_size"
        )
    model = acc.unwrap_model(wrapped)
    items = (
        global_token_count(acc, batches)
        if "num_items_in_batch" in inspect.signature(model.forward).parameters
        else None
    )
    scale = acc.num_processes * len(
        full
    )  # lm_loss parts -> a term whose mean over all parts is the global loss
    for i, batch in enumerate(batches):
        with acc.accumulate(wrapped):
            if i not in full:
                continue
            if is_sharded(model):  # FSDP2: reduce-scatter once per step, after the last micro-batch
                model.set_requires_gradient_sync(i == full[-1])
            out = wrapped(**inputs(batch), **({} if items is None else {"num_items_in_batch": items}))
            loss = out.loss
            if not torch.isfinite(loss.detach()).all():
                bad = True
                ids.extend(batch.get("id", []))
            acc.backward(
                loss
                if items is None
                else backward_objective(out, num_processes=acc.num_processes, grad_accum=grad_accum)
            )
        samples += int(batch["input_ids"].shape[0])
        lm, aux = _f(getattr(out, "lm_loss", None)), _f(getattr(out, "aux_loss", None))
        if items is not None and lm is not None:
            losses.append((float(loss.detach()) + (scale - 1) * lm, scale * lm, aux))
        else:
            losses.append((float(loss.detach()), lm, aux))
    if acc.num_processes > 1:
        t = acc.reduce(torch.tensor([float(bad)], dtype=torch.float64, device=acc.device), reduction="sum")
        bad = float(t[0]) > 0
    return bad, ids, losses, samples


# ----------------------------------------------------------------------------------------------- FSDP2
def fsdp_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch --use_fsdp`` sets ``ACCELERATE_USE_FSDP``).

    Raises:
        DistributedSetupError: FSDP version 1 was asked for (mowe shards with FSDP2 only).
    """
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_FSDP", "false").lower() not in ("1", "true"):
        return False
    if env.get("FSDP_VERSION", "2") != "2":
        raise DistributedSetupError(
            f"FSDP_VERSION={env.get('FSDP_VERSION')}: mowe shards with FSDP2 "
            f"(fully_shard); launch with --fsdp_version 2 (fsdp_version: 2 in the config)"
        )
    return True


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` (the root) was sharded with FSDP2 ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _encoder_params(model: nn.Module) -> set[nn.Parameter]:
    encoders = [getattr(model, "strong_encoder", None)]
    pool = getattr(model, "weak_encoders", None)
    if pool is not None:
        encoders += list(pool.encoders.values())
    return {p for enc in encoders if enc is not None for p in enc.parameters()}


def _decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's repeated blocks (``...layers`` / ``...h`` ModuleLists), the unit FSDP all-gathers at a
    time."""
    for name, mod in llm.named_modules():
        if (
            isinstance(mod, nn.ModuleList)
            and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")
            and len(mod)
        ):
            return list(mod)
    return []


def shard_model(model: nn.Module, *, reshard_after_forward: bool = True) -> list[str]:
    """Shard ``model`` in place with FSDP2 (see the module docstring for what is sharded); returns their
    names.

    Call on every process after ``torch.distributed`` is initialised and the model is on its device, before
    the optimizer is built.
    """
    from torch.distributed.fsdp import fully_shard

    if is_sharded(model):
        return []
    kw = {"reshard_after_forward": reshard_after_forward}
    names = {id(m): n for n, m in model.named_modules()}
    done = []
    llm = getattr(model, "llm", None)
    ignored = _encoder_params(model)
    parts = _decoder_layers(llm) if llm is not None else []
    if llm is not None:
        # The model embeds the prompt itself, outside the LLM's forward (mowe.model._merge): the input
        # embedding must all-gather on its own. Tied to the output head it stays replicated instead (FSDP
        # cannot all-gather one parameter in two units).
        embed = llm.get_input_embeddings()
        head = llm.get_output_embeddings()
        if head is not None and head.weight is embed.weight:
            ignored |= set(embed.parameters())
        else:
            parts.append(embed)
    parts += [
        m for m in (llm, getattr(model, "connector", None), getattr(model, "router", None)) if m is not None
    ]
    for mod in parts:
        if any(p not in ignored for p in mod.parameters()):
            fully_shard(mod, ignored_params=ignored & set(mod.parameters()) or None, **kw)
            done.append(names[id(mod)])
    fully_shard(model, ignored_params=ignored, **kw)
    return [*done, "<root>"]


def verify_sharded(model: nn.Module, *, where: str = "FSDP") -> None:
    """Every trainable parameter must be a ``DTensor`` of a sharded model.

    Raises:
        DistributedSetupError: the model is not sharded, or names the trainable parameters FSDP left alone.
    """
    from torch.distributed.tensor import DTensor

    if not is_sharded(model):
        raise DistributedSetupError(
            f"{where}: FSDP was asked for (ACCELERATE_USE_FSDP) but the model is not "
            f"sharded; call mowe.training.distributed.place_model (the Trainer does)"
        )
    plain = [n for n, p in model.named_parameters() if p.requires_grad and not isinstance(p, DTensor)]
    if plain:
        raise DistributedSetupError(
            f"{where}: trainable parameters are not sharded ({plain[:3]}, {len(plain)} in all). Under FSDP "
            f"mowe "
            f"shards the LLM, connector and router and replicates the frozen encoders; train encoders with "
            f"DDP"
        )


def place_model(accelerator: Any, model: nn.Module) -> list[str]:
    """Move ``model`` to the accelerator's device and shard it when FSDP was asked for; returns what is
    sharded."""
    model.to(accelerator.device)
    if not fsdp_requested() or is_sharded(model):
        return []
    if accelerator.num_processes > 1 and not torch.distributed.is_initialized():
        raise DistributedSetupError("FSDP was asked for but torch.distributed is not initialised")
    return shard_model(model)


def clip_grad_norm(
    accelerator: Any, model: nn.Module, params: list[nn.Parameter], max_norm: float
) -> float | None:
    """Clip the global gradient norm; returns it (sharded gradients: the norm over all shards of all
    processes)."""
    if not is_sharded(model):
        gn = accelerator.clip_grad_norm_(params, max_norm)
        return float(gn) if gn is not None else None
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


# ----------------------------------------------------------------------------------------------- export
def full_state_dict(model: nn.Module, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Consolidated CPU state dict (every process must call it; the main process gets the tensors, the others
    an empty dict for a sharded model); ``keys`` keeps only those entries."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    if keys is not None:
        keep = set(keys)
        sd = {k: v for k, v in sd.items() if k in keep}
    return {k: v.contiguous().clone() for k, v in sd.items()}


def export_final(accelerator: Any, model: nn.Module, directory: str, *, ever_trained: set[str]) -> bool:
    """``save_pretrained(directory)`` from any process layout (all processes call it; the main one writes).

    A sharded model is consolidated first (:func:`full_state_dict`), so the folder loads with
    ``MoWEAudioLLM.from_pretrained`` in one process. False for a model that cannot save itself.
    """
    if getattr(model, "save_pretrained", None) is None or getattr(model, "config", None) is None:
        return False
    keys_fn = getattr(model, "_keys_to_save", None)
    frozen = keys_fn is not None and not ever_trained <= set(keys_fn(False))
    accelerator.wait_for_everyone()
    if is_sharded(model):
        sd = full_state_dict(model)
        if accelerator.is_main_process:
            saving.save_model(model, directory, save_frozen=frozen, state_dict=sd)
    elif accelerator.is_main_process:
        model.save_pretrained(directory, save_frozen=frozen)
    accelerator.wait_for_everyone()
    return True
