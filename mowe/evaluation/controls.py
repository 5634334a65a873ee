"""Audio controls: does a model listen? The same evaluation set with each example's audio replaced.

- ``"shuffled"``: every example gets the audio of another example *of the same task* (a derangement within
  each task, fixed by ``seed``), so answers stay in the task's label space but no longer match their clip. A
  model that uses its audio falls to chance; one that answers from the question alone does not move.
- ``"silent"``: every example gets zeros of its own clip's length.

Example::

    from mowe.evaluation.controls import AudioControl
    shuffled = AudioControl(test_set, "shuffled", seed=0)
    result = evaluate_model(model, processor, shuffled)      # or evaluate_model(...,
    audio_control="shuffled")
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from mowe.errors import MoWEInputError

__all__ = ["CONTROLS", "AudioControl", "shuffled_indices"]

#: the audio controls :class:`AudioControl` knows
CONTROLS = ("shuffled", "silent")


def shuffled_indices(tasks: list[str], *, seed: int = 0) -> list[int]:
    """For each example, the index whose audio it gets: a derangement within each task (a random cyclic order,
    each example takes the next one's clip), so no example keeps its own clip where its task has two or more.

    Args:
        tasks: each example's task.
        seed: fixes the order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        groups[t].append(i)
    rng = np.random.default_rng(seed)
    source = list(range(len(tasks)))
    for task in sorted(groups):
        members = [groups[task][j] for j in rng.permutation(len(groups[task]))]
        for j, i in enumerate(members):
            source[i] = members[(j + 1) % len(members)]
    return source


class AudioControl(Dataset):
    """``dataset`` with every example's ``audio`` replaced (``"shuffled"`` or ``"silent"``; see the module).

    Items keep their own id, task, instruction and answer. ``dataset`` yields dicts with ``audio`` (``(s,)``
    float waveform) and ``task``; an ``example_info(i)`` method (as :class:`~mowe.data.ManifestDataset` has)
    lets the shuffle read tasks without decoding audio.
    """

    def __init__(self, dataset: Any, control: Literal["shuffled", "silent"], *, seed: int = 0):
        if control not in CONTROLS:
            raise MoWEInputError(f"audio_control must be one of {CONTROLS}, got {control!r}")
        self.dataset = dataset
        self.control = control
        self.source: list[int] | None = None
        if control == "shuffled":
            info = getattr(dataset, "example_info", None)
            tasks = [str((info(i) if info else dataset[i])["task"]) for i in range(len(dataset))]
            self.source = shuffled_indices(tasks, seed=seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.dataset[index]
        if item is None:
            return None
        item = dict(item)
        if self.control == "silent":
            item["audio"] = torch.zeros_like(torch.as_tensor(item["audio"]))
        else:
            other = self.dataset[self.source[index]]
            if other is None:  # an unreadable clip in "skip" mode: this example is skipped too
                return None
            item["audio"] = other["audio"]
            if "duration" in other:
                item["duration"] = other["duration"]
        return item
