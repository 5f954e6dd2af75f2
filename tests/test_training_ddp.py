"""Data parallelism on CPU: two processes (torchrun, gloo) end with the same weights, equal to a
one-process run over the same global batch.

The rule (onehead.training.seeding): micro-batch m of step s on process r reads the items of, and
draws its noise from, global slot m x processes + r. So 2 processes x accumulation 1 and
1 process x accumulation 2 (batch 1 each: a global batch of 2) train on the same items with the
same noise, and DDP's gradient average equals accumulation's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from onehead.training import load_config
from test_training import TEST_MODEL  # the same small model as the one-process tests

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


WORKER = '''
import sys
import torch
from safetensors.torch import save_file
from onehead.training import Trainer, load_config

torch.set_num_threads(1)
trainer = Trainer(load_config(sys.argv[1]))
trainer.fit()
save_file({n: p.detach().contiguous() for n, p in trainer.model.named_parameters()},
          f"{sys.argv[2]}/rank{trainer.accelerator.process_index}.safetensors")
'''


def write_config(folder: Path, dataset_dir: Path, **train) -> Path:
    config = {"model": TEST_MODEL,
              "data": {"train": [{"path": str(dataset_dir)}], "clip_length": 1},
              "train": {"output_dir": str(folder / "run"), "seed": 5, "max_steps": 2, "batch_size": 1,
                        "learning_rate": 1e-3, "weight_decay": 0.0, "ema": {"enabled": True, "decay": 0.9},
                        "log_every": 1, "validate_every": 0, "save_every": 0, "keep_checkpoints": 1, **train}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if "loss" in line]


def test_two_processes_equal_one_process_with_accumulation(head, tmp_path):
    from safetensors.torch import load_file

    from onehead.data.synthetic import SynthOptions, synthesize

    data = tmp_path / "data"
    synthesize(head, data, SynthOptions(identities=2, sequences=1, frames=3, views=1, size=32, seed=0,
                                        texture_size=64, progress=False))
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    two = write_config(tmp_path / "two", data)
    one = write_config(tmp_path / "one", data, gradient_accumulation_steps=2)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(worker), str(two), str(tmp_path / "two")], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es), global batch 2 (1 x 1 accumulation x 2)" in result.stdout, result.stdout

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from onehead.training import Trainer

        trainer = Trainer(load_config(one))
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    single = {n: p.detach() for n, p in trainer.model.named_parameters()}

    rank0, rank1 = (load_file(tmp_path / "two" / f"rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys() == single.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the two processes hold different weights"
    worst = max((rank0[k] - single[k]).abs().max().item() for k in rank0)
    assert worst <= 1e-5, f"2 processes x batch 1 differ from 1 process x accumulation 2 by {worst}"
    print(f"largest weight difference, 2 processes vs 1 with accumulation: {worst:.2e}")

    logged_two, logged_one = records(tmp_path / "two" / "run"), records(tmp_path / "one" / "run")
    assert [r["global_batch"] for r in logged_two] == [r["global_batch"] for r in logged_one] == [2, 2]
    assert [r["processes"] for r in logged_two] == [2, 2] and [r["processes"] for r in logged_one] == [1, 1]
    for a, b in zip(logged_two, logged_one):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a, b)
        assert a["grad_norm"] > 0 and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * b["grad_norm"], (a, b)
    assert logged_one[0]["loss"] != logged_one[1]["loss"]
    # the shared checkpoint (main process) holds the same weights and loads
    from onehead.pipelines import Animator
    saved = Animator.from_pretrained(tmp_path / "two" / "run" / "checkpoints" / "step_000002")
    assert torch.equal(saved.model.pose_guider.out.weight, rank0["pose_guider.out.weight"])
