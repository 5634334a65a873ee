"""Multi-process training tests: a variable-length-answer dataset and runners for 1 process, DDP and FSDP2
(gloo).

Answers have 1 to 30 tokens, so a process's mean loss differs from the global batch's mean: a split of the
global batch over processes or accumulation micro-batches only gives the single-process result when the loss
is the sum over all answer tokens divided by their global count.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
from torch.utils.data import Dataset

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ANSWER_LENGTHS = (1, 30, 2, 17, 1, 9, 30, 4)


class VarLenDataset(Dataset):
    """``n`` examples: a sine clip, a fixed prompt, an answer of ``ANSWER_LENGTHS[i % 8]`` tokens."""

    def __init__(self, n: int = 32, *, seed: int = 0):
        from _trainer_helpers import SAMPLES

        g = torch.Generator().manual_seed(seed)
        self.freq = (200 + 1500 * torch.rand(n, generator=g)).tolist()
        self.answers = [
            torch.randint(10, 120, (ANSWER_LENGTHS[i % len(ANSWER_LENGTHS)],), generator=g).tolist()
            for i in range(n)
        ]
        self.task_list = ["asr" if i % 2 else "gender" for i in range(n)]
        self.samples = SAMPLES

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, i: int):
        from _trainer_helpers import PROMPT

        t = torch.arange(self.samples, dtype=torch.float32) / 16000
        wave = 0.5 * torch.sin(2 * torch.pi * self.freq[i] * t)
        ids = torch.tensor(PROMPT + self.answers[i])
        labels = torch.tensor([-100] * len(PROMPT) + self.answers[i])
        return {
            "input_ids": ids,
            "labels": labels,
            "waveform": wave,
            "task": self.task_list[i],
            "id": f"ex{i}",
        }


def pad_collate(examples):
    """Right-pad token ids (0) and labels (-100); clips share one length."""
    examples = [e for e in examples if e is not None]
    L = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), L, dtype=torch.long)
    labels = torch.full((len(examples), L), -100, dtype=torch.long)
    mask = torch.zeros(len(examples), L, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[r, :n], labels[r, :n], mask[r, :n] = e["input_ids"], e["labels"], 1
    waves = torch.stack([e["waveform"] for e in examples])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "waveforms": waves,
        "wave_lengths": torch.full((len(examples),), waves.shape[1], dtype=torch.long),
        "task": [e["task"] for e in examples],
        "id": [e["id"] for e in examples],
    }


def model(aux_loss_weight: float = 0.0):
    """The tiny MoWE model with two weak encoders (top-1 routing), LoRA dropout 0 and the given load-balance
    weight."""
    import dataclasses

    from _trainer_helpers import tiny_config

    from mowe import MoWEAudioLLM

    cfg = tiny_config(weak=2, lora_dropout=0.0)
    cfg = dataclasses.replace(cfg, router=dataclasses.replace(cfg.router, aux_loss_weight=aux_loss_weight))
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(cfg)


SCRIPT = r'''
import json, os, sys
sys.path.insert(0, {tests_dir!r})
import torch
torch.set_num_threads(1)
from _dist_helpers import VarLenDataset, pad_collate, model
from mowe.training.stages import Stage
from mowe.training.trainer import Trainer, TrainConfig

args = json.loads(sys.argv[1])
m = model(args.get("aux", 0.0))
stages = [Stage(**s) for s in args["stages"]]
evals = VarLenDataset(args["eval_n"], seed=1) if args.get("eval_n") else None
trainer = Trainer(m, VarLenDataset(args.get("n", 32)), config=TrainConfig(**args["train"]), stages=stages,
                  collate_fn=pad_collate, eval_dataset=evals)
res = trainer.train(resume=args.get("resume"))
if args.get("logits"):  # the trained (possibly sharded) model's logits on 4 examples, every process runs it
    m.eval()
    batch = pad_collate([VarLenDataset(8)[i] for i in range(4)])
    with torch.no_grad():
        keys = ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")
        out = m(**{{k: batch[k] for k in keys}})
    if trainer.accelerator.is_main_process:
        torch.save(out.logits, os.path.join(args["train"]["output_dir"], "logits.pt"))
sys.stdout.flush()
os.write(1, f"DONE {{res.global_step}} SHARDED {{type(m).__name__.startswith('FSDP')}}\n".encode())
'''

STAGES = [
    {"name": "a", "train": ["connector"], "steps": 2, "lr": 2e-4},
    {"name": "b", "train": ["connector", "routers", "lora"], "steps": 2, "lr": 2e-4, "warmup_steps": 0},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_args(out, *, batch_size: int, grad_accum: int = 1, **train) -> dict:
    cfg = {
        "output_dir": str(out),
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "progress": False,
        "log_every": 1,
        "group_by_length": False,
        "pack_sequences": "auto",
        "eval_every": 2,
        **train,
    }
    return {
        "stages": STAGES,
        "train": cfg,
        "eval_n": 9,
    }  # 9: under FSDP one process needs a filler eval batch


def launch(tmp_path, args: dict, *, processes: int = 1, fsdp: bool = False) -> subprocess.Popen:
    """Start one training run (``processes`` > 1: accelerate launch on the CPU with gloo); returns the
    process."""
    script = tmp_path / "train_dist.py"
    if not script.exists():
        script.write_text(SCRIPT.format(tests_dir=TESTS_DIR))
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP"):
        env.pop(k, None)
    if processes == 1:
        cmd = [sys.executable, str(script), json.dumps(args)]
    else:
        # `--cpu` with several processes needs mpirun; torchrun (--multi_gpu, or --use_fsdp) with
        # ACCELERATE_USE_CPU=1 puts the processes on the CPU with gloo.
        mode = ["--use_fsdp", "--fsdp_version", "2"] if fsdp else ["--multi_gpu"]
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            *mode,
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            str(script),
            json.dumps(args),
        ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, *, processes: int = 1, timeout: int = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-5000:]
    assert out.count("DONE 4") == processes, out + err[-3000:]
    return out


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    """Every tensor a run's ``final/`` folder holds: ``model.safetensors`` and, when present, the LoRA adapter
    that ``save_pretrained`` writes to ``llm_adapter/`` (keys prefixed ``adapter:``)."""
    from safetensors.torch import load_file

    out = load_file(str(run_dir / "final" / "model.safetensors"))
    adapter = run_dir / "final" / "llm_adapter" / "adapter_model.safetensors"
    if adapter.is_file():
        out.update({f"adapter:{k}": v for k, v in load_file(str(adapter)).items()})
    return out


def shared_dir(tmp_path_factory):
    """A folder shared by the test modules of one session: the one-process reference run is made once."""
    path = tmp_path_factory.getbasetemp() / "dist-shared"
    path.mkdir(exist_ok=True)
    return path


def logs(out_dir, key: str = "loss") -> list[dict]:
    """The run's log records holding ``key`` (``"loss"``: training steps, ``"eval_loss"``: evaluations)."""
    lines = (out_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if key in r]
