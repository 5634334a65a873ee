"""The same trainer under ``accelerate launch --num_processes 2`` on the CPU (gloo): same global batch, same result.

Two processes with ``batch_size=2`` each must end with the weights of one process with ``batch_size=4``: the
sampler cuts one global order into global batches and gives each process a contiguous slice, so the global
batch holds the same examples in both set-ups; every example has the same number of answer tokens, so the mean
of the two processes' mean losses (DDP averages gradients) equals the single process's mean loss. LoRA dropout
is off (the processes draw different dropout masks by design: seed + rank).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
from _trainer_helpers import TRAIN_SCRIPT, read_weights

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where _trainer_helpers.py is


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(out, batch_size: int) -> str:
    stages = [{"name": "a", "train": ["connector"], "steps": 2, "lr": 3e-3},
              {"name": "b", "train": ["connector", "lora"], "steps": 2, "lr": 3e-3, "tasks": {"asr": 1.0, "gender": 1.0,
                                                                                  "chord": 1.0, "tempo": 1.0}}]
    return json.dumps({"stages": stages, "n": 16, "weak": 0, "lora_dropout": 0.0,
                       "train": {"output_dir": str(out), "batch_size": batch_size, "save_every": 2, "progress": False,
                                     "log_every": 1}})


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(tests_dir=TESTS_DIR))
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    env.pop("WORLD_SIZE", None)
    # `--cpu` with several processes needs mpirun; `--multi_gpu` runs torchrun, and ACCELERATE_USE_CPU=1 makes
    # the processes use the CPU with the gloo backend (DistributedType.MULTI_CPU).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(_free_port()), str(script), _args(tmp_path / "ddp", 2)]
    ddp = subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    single = subprocess.run([sys.executable, str(script), _args(tmp_path / "single", 4)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    out, err = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, err[-4000:]
    assert single.returncode == 0, single.stderr[-4000:]
    assert out.count("DONE 4") == 2  # both ranks finished all steps

    a = read_weights(str(tmp_path / "single" / "final" / "model.safetensors"))
    b = read_weights(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0, msg=k)
    print("max |single - ddp| =", max(float((a[k] - b[k]).abs().max()) for k in a))
    # and training did move the weights (the comparison is not between two untouched models)
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_step"] == 4
    assert os.path.isfile(tmp_path / "ddp" / "checkpoints" / "step-4" / "rng-1.pt")
    logs = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    single_logs = [json.loads(x) for x in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    assert [round(r["loss"], 4) for r in logs] == [round(r["loss"], 4) for r in single_logs]
    assert logs[-1]["loss"] != logs[0]["loss"]


# ------------------------------------------------------------------------ answers of different lengths (1-30 tokens)
import shutil  # noqa: E402

import pytest  # noqa: E402
from _dist_helpers import finish, launch, logs, pad_collate, run_args  # noqa: E402
from _dist_helpers import model as dist_model  # noqa: E402

from mowe.training.distributed import (  # noqa: E402
    DistributedSetupError,
    check_launch,
    count_label_tokens,
    fsdp_requested,
)

TOL = 1e-5


def test_parts_of_a_batch_add_up_to_its_loss_in_every_llm_layout():
    """lm_loss with num_items_in_batch = the whole batch's count: the halves' losses sum to the batch's mean loss,
    in the padded, packed and grouped LLM layouts; the mean of the halves' own means does not."""
    from _dist_helpers import VarLenDataset

    torch.manual_seed(0)
    m = dist_model().eval()
    ds = VarLenDataset(8)
    keys = ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")
    full = {k: v for k, v in pad_collate([ds[i] for i in range(8)]).items() if k in keys}
    halves = [{k: v for k, v in pad_collate([ds[i] for i in idx]).items() if k in keys}
              for idx in ((0, 2, 4, 6), (1, 3, 5, 7))]
    items = torch.tensor(float(count_label_tokens(full)))
    assert items == sum(count_label_tokens(h) for h in halves)
    with torch.no_grad():
        for pack in (False, True, "groups"):
            ref = m(**full, pack=pack).lm_loss
            parts = [m(**h, pack=pack, num_items_in_batch=items).lm_loss for h in halves]
            torch.testing.assert_close(parts[0] + parts[1], ref, atol=TOL, rtol=0, msg=str(pack))
            torch.testing.assert_close(m(**full, pack=pack, num_items_in_batch=items).lm_loss, ref, atol=TOL, rtol=0)
            means = [m(**h, pack=pack).lm_loss for h in halves]
            assert abs(float(means[0] + means[1]) / 2 - float(ref)) > 1e-3  # the split matters without the count


@pytest.fixture(scope="module")
def varlen_runs(tmp_path_factory):
    """1 process x batch 8; 1 process x batch 4 x grad_accum 2; DDP 2 processes x batch 4 (gloo), run together."""
    tmp = tmp_path_factory.mktemp("varlen")
    procs = {"single": launch(tmp, run_args(tmp / "single", batch_size=8)),
             "accum": launch(tmp, run_args(tmp / "accum", batch_size=4, grad_accum=2)),
             "ddp": launch(tmp, run_args(tmp / "ddp", batch_size=4), processes=2)}
    for name, p in procs.items():
        finish(p, processes=2 if name == "ddp" else 1)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _assert_same_run(a, b):
    wa = read_weights(str(a / "final" / "model.safetensors"))
    wb = read_weights(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=TOL, rtol=0, msg=k)
    la, lb = logs(a), logs(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb, strict=True):
        assert abs(ra["loss"] - rb["loss"]) < TOL and abs(ra["lm_loss"] - rb["lm_loss"]) < TOL, (ra, rb)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_ddp_with_answers_of_different_lengths_equals_one_process(varlen_runs):
    diff = _assert_same_run(varlen_runs / "single", varlen_runs / "ddp")
    print("max |single - ddp| =", diff)
    moved = read_weights(str(varlen_runs / "single" / "final" / "model.safetensors"))
    start = dist_model().state_dict()
    assert any(not torch.equal(moved[k], start[k]) for k in moved if "lora" in k)  # LoRA trained in stage b


def test_gradient_accumulation_2x4_equals_1x8(varlen_runs):
    print("max |1x8 - 2x4| =", _assert_same_run(varlen_runs / "single", varlen_runs / "accum"))


# ------------------------------------------------------------------------ launcher trap
def test_check_launch_names_the_process_count_it_was_asked_for():
    check_launch(1, environ={}, parent_cmdline=["python", "train.py"])  # a plain single process
    check_launch(2, environ={"WORLD_SIZE": "2"}, parent_cmdline=[])
    with pytest.raises(DistributedSetupError, match="asked for 4 processes but this run has 1"):
        check_launch(1, environ={"WORLD_SIZE": "4"}, parent_cmdline=[])
    with pytest.raises(DistributedSetupError, match="(?s)asked for 2 processes.*--multi_gpu"):
        check_launch(1, environ={}, parent_cmdline=["python", "-m", "accelerate.commands.launch", "--cpu",
                                                    "--num_processes=2", "train.py"])
    with pytest.raises(DistributedSetupError, match="asked for several"):
        check_launch(1, environ={"MASTER_ADDR": "127.0.0.1", "ACCELERATE_USE_CPU": "True"}, parent_cmdline=[])


def test_mowe_train_under_accelerate_cpu_with_two_processes_says_it_got_one(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "mowe", "train", "--config", str(tmp_path / "run.yaml")],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode != 0
    assert "asked for 2 processes but this run has 1" in res.stderr
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu" in res.stderr


# ------------------------------------------------------------------------ example configs
EXAMPLES = os.path.join(os.path.dirname(TESTS_DIR), "examples")


def _launch_args(name: str):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", os.path.join(EXAMPLES, name), "x.py"])
    return _validate_launch_command(args)[0]


def test_example_accelerate_configs_parse_and_build(monkeypatch):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    ddp = _launch_args("accelerate_ddp.yaml")
    assert ddp.multi_gpu and not ddp.use_fsdp and ddp.num_processes == 8
    fsdp = _launch_args("accelerate_fsdp.yaml")
    env = prepare_multi_gpu_env(fsdp)
    assert fsdp_requested(env)  # FSDP2 asked for: mowe shards the model itself (test_fsdp2.py runs that path)
    for k, v in env.items():
        if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(k, v)
    assert FullyShardedDataParallelPlugin().fsdp_version == 2
    with pytest.raises(DistributedSetupError, match="fsdp_version 2"):
        fsdp_requested({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})
    ds = _launch_args("accelerate_deepspeed.yaml")
    assert ds.use_deepspeed and ds.deepspeed_config_file.endswith("deepspeed_zero2.json")
    plugin = DeepSpeedPlugin(hf_ds_config=os.path.join(EXAMPLES, "deepspeed_zero2.json"))
    assert plugin.zero_stage == 2  # running it needs CUDA + deepspeed: GPU only
