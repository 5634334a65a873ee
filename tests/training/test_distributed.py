"""The trainer on several processes (CPU, gloo): one loss over the global batch, whatever the split.

A global batch (all processes x all accumulation micro-batches) is cut from one global order by the sampler,
so every split holds the same examples; answers of 1 to 30 tokens make a process's mean loss differ from the
global one, so only the global-token normalisation (``num_items_in_batch``, :mod:`mowe.training.distributed`)
makes 2 processes x batch 4 and 1 process x 4 x grad_accum 2 equal 1 process x batch 8. LoRA dropout is off
(processes
draw different dropout masks by design: seed + rank); the router's load-balance weight is 0 (it is a
per-process statistic). The launcher trap and the example accelerate configs are checked here too; FSDP2 in
test_fsdp2.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from _dist_helpers import final_weights, finish, launch, logs, pad_collate, run_args, shared_dir
from _dist_helpers import model as dist_model

from mowe.training.distributed import (
    DistributedSetupError,
    check_launch,
    count_label_tokens,
    fsdp_requested,
)

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
TOL = 1e-5


def test_parts_of_a_batch_add_up_to_its_loss_in_every_llm_layout():
    """lm_loss with num_items_in_batch = the whole batch's count: the halves' losses sum to the batch's mean
    loss, in the padded, packed and grouped LLM layouts; the mean of the halves' own means does not."""
    from _dist_helpers import VarLenDataset

    torch.manual_seed(0)
    m = dist_model().eval()
    ds = VarLenDataset(8)
    keys = ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")
    full = {k: v for k, v in pad_collate([ds[i] for i in range(8)]).items() if k in keys}
    halves = [
        {k: v for k, v in pad_collate([ds[i] for i in idx]).items() if k in keys}
        for idx in ((0, 2, 4, 6), (1, 3, 5, 7))
    ]
    items = torch.tensor(float(count_label_tokens(full)))
    assert items == sum(count_label_tokens(h) for h in halves)
    with torch.no_grad():
        for pack in (False, True, "groups"):
            ref = m(**full, pack=pack).lm_loss
            parts = [m(**h, pack=pack, num_items_in_batch=items).lm_loss for h in halves]
            torch.testing.assert_close(parts[0] + parts[1], ref, atol=TOL, rtol=0, msg=str(pack))
            torch.testing.assert_close(
                m(**full, pack=pack, num_items_in_batch=items).lm_loss, ref, atol=TOL, rtol=0
            )
            means = [m(**h, pack=pack).lm_loss for h in halves]
            assert (
                abs(float(means[0] + means[1]) / 2 - float(ref)) > 1e-3
            )  # the split matters without the count


@pytest.fixture(scope="module")
def varlen_runs(tmp_path_factory):
    """1 process x batch 8; 1 process x batch 4 x grad_accum 2; DDP 2 processes x batch 4 (gloo), run
    together."""
    tmp = tmp_path_factory.mktemp("varlen")
    ref = shared_dir(tmp_path_factory) / "single"  # reused by test_fsdp2.py
    procs = {
        "ddp": launch(tmp, run_args(tmp / "ddp", batch_size=4, save_every=2), processes=2),
        "accum": launch(tmp, run_args(tmp / "accum", batch_size=4, grad_accum=2)),
    }
    if not (ref / "final").is_dir():
        procs["single"] = launch(tmp, run_args(ref, batch_size=8))
    for name, p in procs.items():
        finish(p, processes=2 if name == "ddp" else 1)
    (tmp / "single").symlink_to(ref, target_is_directory=True)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _assert_same_run(a, b):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=TOL, rtol=0, msg=k)
    la, lb = logs(a), logs(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb, strict=True):
        assert abs(ra["loss"] - rb["loss"]) < TOL and abs(ra["lm_loss"] - rb["lm_loss"]) < TOL, (ra, rb)
    ea, eb = (
        logs(a, "eval_loss"),
        logs(b, "eval_loss"),
    )  # token-mean eval loss: any batch size / process count
    assert [r["step"] for r in ea] == [r["step"] for r in eb] == [2, 4]
    for ra, rb in zip(ea, eb, strict=True):
        assert abs(ra["eval_loss"] - rb["eval_loss"]) < TOL, (ra, rb)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_ddp_with_answers_of_different_lengths_equals_one_process(varlen_runs):
    diff = _assert_same_run(varlen_runs / "single", varlen_runs / "ddp")
    print("max |single - ddp| =", diff)
    moved = final_weights(varlen_runs / "single")
    start = dist_model().state_dict()
    lora = [k for k in moved if "lora_B" in k]
    assert lora and all(
        not torch.equal(moved[k], torch.zeros_like(moved[k])) for k in lora
    )  # LoRA B starts at 0
    assert any(not torch.equal(moved[k], start[k]) for k in moved if k.startswith("connector."))
    # the DDP run's checkpoint records its 2 processes and holds both RNG states
    step = varlen_runs / "ddp" / "checkpoints" / "step-4"
    state = json.loads((step / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_step"] == 4
    assert (step / "rng-1.pt").is_file() and (step / "model.safetensors").is_file()


def test_gradient_accumulation_2x4_equals_1x8(varlen_runs):
    print("max |1x8 - 2x4| =", _assert_same_run(varlen_runs / "single", varlen_runs / "accum"))


# ------------------------------------------------------------------------ launcher trap
def test_check_launch_names_the_process_count_it_was_asked_for():
    check_launch(1, environ={}, parent_cmdline=["python", "train.py"])  # a plain single process
    check_launch(2, environ={"WORLD_SIZE": "2"}, parent_cmdline=[])
    with pytest.raises(DistributedSetupError, match="asked for 4 processes but this run has 1"):
        check_launch(1, environ={"WORLD_SIZE": "4"}, parent_cmdline=[])
    with pytest.raises(DistributedSetupError, match="(?s)asked for 2 processes.*--multi_gpu"):
        check_launch(
            1,
            environ={},
            parent_cmdline=[
                "python",
                "-m",
                "accelerate.commands.launch",
                "--cpu",
                "--num_processes=2",
                "train.py",
            ],
        )
    with pytest.raises(DistributedSetupError, match="asked for several"):
        check_launch(1, environ={"MASTER_ADDR": "127.0.0.1", "ACCELERATE_USE_CPU": "True"}, parent_cmdline=[])


def test_mowe_train_under_accelerate_cpu_with_two_processes_says_it_got_one(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        env.pop(k, None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "mowe",
            "train",
            "--config",
            str(tmp_path / "run.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
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


# ------------------------------------------------------------------------ the GPU script, on a CPU with toy
# sizes
def _gpu_script():
    import importlib.util

    path = os.path.join(os.path.dirname(TESTS_DIR), "benchmarks", "gpu_paper_size.py")
    spec = importlib.util.spec_from_file_location("gpu_paper_size", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_paper_size_script_builds_the_paper_config_and_runs_tiny_on_cpu(tmp_path):
    """GPU only for real: here the paper-size config is checked (8 B LLM counted on the meta device) and the
    whole training path runs with toy sizes; its RESULTS.md section is replaced, not duplicated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    gpu = _gpu_script()
    cfg = gpu.paper_config("8b", tiny=False)
    assert cfg.strong.preset == "large-v3" and sorted(e.preset for e in cfg.weak_encoders.values()) == [
        "hubert-base",
        "hubert-base",
        "tiny",
        "tiny",
    ]
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg.llm.config))
    assert 7.5e9 < sum(p.numel() for p in llm.parameters()) < 8.5e9
    res = gpu.main(
        [
            "--tiny",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--batch-size",
            "2",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert (
        res["mode"] == "single" and res["timed_steps"] == 2 and res["step_s"] > 0 and res["peak_mem_gib"] > 0
    )
    assert 0 < res["trainable_params"] < res["params"]
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    gpu.write_results(res, str(results))
    gpu.write_results(res, str(results))
    assert results.read_text().count("Paper-size MoWE on GPUs") == 1
