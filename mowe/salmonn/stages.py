"""SALMONN's training curriculum (arXiv 2310.13289, sec. 3.3) as :class:`~mowe.curriculum.Stage` objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mowe.curriculum import Stage, per_stage_steps

__all__ = ["salmonn_stages"]


def salmonn_stages(
    steps: int | Sequence[int] = (1000, 1000, 12),
    *,
    lr: float = 3e-5,
    pretrain_tasks: Mapping[str, float] | None = None,
    activation_tasks: Mapping[str, float] | None = None,
    activation_lora_scale: float = 0.5,
) -> list[Stage]:
    """SALMONN's three stages (arXiv 2310.13289, sec. 3.3).

    1. ``pretrain``: connector (window Q-Former) + LoRA on ``pretrain_tasks`` (SALMONN: speech recognition and
       audio captioning).
    2. ``instruction``: the same parts on all tasks.
    3. ``activation``: a short stage on ``activation_tasks`` (a small set of long-answer, QA-like tasks) with
       the LoRA scaling reduced.

    How the activation trick is modelled: SALMONN found that the instruction-tuned model over-fits to short
    ASR/caption-style answers and that *lowering the LoRA scaling factor* brings back the LLM's own abilities;
    it then fine-tunes briefly on a few long, diverse responses (obtained with the discounted scaling) so the
    model answers well at full scale. Here the activation stage trains LoRA with its scaling multiplied by
    ``activation_lora_scale`` (the trainer restores the configured scaling afterwards). To use the discounted
    scaling at inference as well, call :func:`mowe.hf.adapter.set_lora_scale` (``mowe infer --lora-scale``).

    Args:
        steps: one count for all three stages or three counts.
        lr: peak learning rate (SALMONN: 3e-5).
        pretrain_tasks: task weights of stage 1; None: all data. Your data's names for ASR and captioning go
            here (:func:`mowe.salmonn.salmonn` passes the demo corpus's).
        activation_tasks: task weights of stage 3; None: all data.
        activation_lora_scale: multiplier of the LoRA scaling in the activation stage.
    """
    s1, s2, s3 = per_stage_steps(steps, "salmonn_stages")
    parts = ("connector", "lora")

    def weights(tasks: Mapping[str, float] | None) -> dict[str, float] | None:
        return None if tasks is None else dict(tasks)

    return [
        Stage("pretrain", parts, s1, lr, tasks=weights(pretrain_tasks), warmup_steps=min(s1, 100) // 10),
        Stage("instruction", parts, s2, lr, warmup_steps=min(s2, 100) // 10),
        Stage("activation", parts, s3, lr, tasks=weights(activation_tasks), lora_scale=activation_lora_scale),
    ]
