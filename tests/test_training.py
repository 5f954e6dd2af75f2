"""training/train_animator.py on CPU: losses, trained and frozen parameters, exact resume,
checkpoints that load, stage 2, config errors. A smaller-than-tiny Animator on a synthetic set
of 2 identities x 3 frames at 32 px keeps the whole file well under a minute."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train_animator.py"

# smaller than the tiny preset: 32 px, a narrow UNet
TEST_MODEL = {
    "preset": "tiny", "resolution": 32, "uv_resolution": 32, "guider_channels": [8, 16, 32, 32],
    "unet": {"layers_per_block": 1, "block_out_channels": [16, 32, 32],
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 8},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny models gain nothing from two, and on a busy 2-core machine the
    thread pool's waiting made the file 15 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trainer():
    """The training script as a module (training/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_animator", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, head):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("train_data") / "synthetic"
    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=3, views=1, size=32, seed=0,
                                       texture_size=64, progress=False))
    return out


def write_config(folder: Path, dataset_dir: Path, stage: int = 1, model=None, **train) -> Path:
    config = {
        "model": model if model is not None else TEST_MODEL,
        "data": {"train": [{"path": str(dataset_dir), "weight": 1.0}], "validation": str(dataset_dir),
                 "clip_length": 1 if stage == 1 else 2, "stage2_real_only": False},
        "train": {"output_dir": str(folder / "run"), "stage": stage, "seed": 3, "max_steps": 4,
                  "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 1, "weight_decay": 0.0,
                  "ema": {"enabled": True, "decay": 0.9}, "log_every": 1, "validate_every": 4,
                  "validation_items": 1, "validation_sampling_steps": 2, "save_every": 2,
                  "keep_checkpoints": 0, **train},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, named like the Animator's state_dict (read without building one)."""
    from safetensors.torch import load_file

    tensors = dict(load_file(checkpoint / "animator.safetensors"))
    for unet in ("denoising_unet", "reference_unet"):
        tensors.update({f"{unet}.{k}": v for k, v in
                        load_file(checkpoint / unet / "diffusion_pytorch_model.safetensors").items()})
    return tensors


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]


@pytest.fixture(scope="module")
def stage1_run(trainer, dataset_dir, tmp_path_factory):
    """4 stage-1 steps with checkpoints at steps 2 and 4."""
    folder = tmp_path_factory.mktemp("stage1")
    config = write_config(folder, dataset_dir)
    assert trainer.main(["--config", str(config)]) == 0
    return folder, config


def test_stage1_trains(stage1_run):
    folder, _ = stage1_run
    run = folder / "run"
    loss = losses(run)
    assert sorted(loss) == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for v in loss.values())
    before, after = weights(run / "checkpoints" / "step_000002"), weights(run / "checkpoints" / "step_000004")
    for part in ("denoising_unet.", "reference_unet.", "gaussian_field.", "pose_guider.", "domain_tokens."):
        assert any(changed(before, after, part)), part
    assert not any(changed(before, after, "temporal.")), "temporal layers are frozen in stage 1"
    assert (run / "validation" / "step_000004.png").is_file()
    assert (run / "latest.txt").read_text().strip() == "checkpoints/step_000004"
    state = run / "checkpoints" / "step_000004" / "training_state"
    assert json.loads((state / "state.json").read_text())["step"] == 4
    for name in ("optimizer.safetensors", "scheduler.json", "ema.safetensors", "rng_rank0.safetensors"):
        assert (state / name).is_file(), name
    record = json.loads((run / "train_log.jsonl").read_text().splitlines()[0])
    assert {"loss", "lr", "samples_per_s", "grad_norm"} <= set(record)


def test_checkpoint_loads(stage1_run):
    from onehead.pipelines.animator import Animator

    folder, _ = stage1_run
    checkpoint = folder / "run" / "checkpoints" / "step_000004"
    animator = Animator.from_pretrained(checkpoint)
    assert animator.config.resolution == 32
    ema = Animator.from_pretrained(checkpoint / "ema")
    differs = [not torch.equal(a, b) for a, b in zip(animator.denoising_unet.parameters(),
                                                       ema.denoising_unet.parameters())]
    assert any(differs), "the EMA weights are an average, not the last weights"


def test_resume_is_exact(trainer, stage1_run, tmp_path):
    folder, config = stage1_run
    original = folder / "run"
    resumed = tmp_path / "resumed"
    assert trainer.main(["--config", str(config), "--output-dir", str(resumed),
                         "--resume", str(original / "checkpoints" / "step_000002")]) == 0
    first, second = losses(original), losses(resumed)
    assert sorted(second) == [3, 4]
    for step in (3, 4):
        assert abs(first[step] - second[step]) <= 1e-6, (step, first[step], second[step])
    a, b = weights(original / "checkpoints" / "step_000004"), weights(resumed / "checkpoints" / "step_000004")
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_resume_latest_in_place(trainer, stage1_run, tmp_path):
    """--resume latest continues a run in its own folder and keeps its log consistent."""
    import shutil

    folder, config = stage1_run
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run)
    assert trainer.main(["--config", str(config), "--output-dir", str(run), "--resume", "latest",
                         "--max-steps", "5", "--set", "train.validate_every=0"]) == 0
    assert sorted(losses(run)) == [1, 2, 3, 4, 5]
    assert (run / "latest.txt").read_text().strip() == "checkpoints/step_000005"


def test_stage2_trains_only_temporal_layers(trainer, stage1_run, dataset_dir, tmp_path):
    folder, _ = stage1_run
    init = folder / "run" / "checkpoints" / "step_000004"
    config = write_config(tmp_path, dataset_dir, stage=2, model={}, init_from=str(init), max_steps=3,
                          save_every=0, validate_every=3, ema={"enabled": False})
    assert trainer.main(["--config", str(config)]) == 0
    loss = losses(tmp_path / "run")
    assert sorted(loss) == [1, 2, 3] and all(math.isfinite(v) for v in loss.values())
    before, after = weights(init), weights(tmp_path / "run" / "checkpoints" / "step_000003")
    assert any(changed(before, after, "temporal."))
    frozen = [k for k in before if not k.startswith("temporal.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)


def test_stage2_refuses_synthetic_data(trainer, dataset_dir):
    from onehead.errors import ConfigError

    data = trainer.DataConfig(train=[trainer.DataSource(str(dataset_dir))], clip_length=2)
    with pytest.raises(ConfigError, match="real video only"):
        trainer.build_train_dataset(data, stage=2, size=32, seed=0)


def test_weighted_sampler_is_deterministic_and_shares(trainer):
    sizes, weights = [10, 90], [1.0, 3.0]
    sampler = trainer.EpochBatchSampler(sizes, weights, batch_size=4, batches_per_epoch=500, seed=1)
    sampler.set_epoch(2)
    draws = np.array(list(sampler))
    assert abs((draws < 10).mean() - 0.25) < 0.04  # each source gets its share, whatever its size
    assert draws.min() == 0 and draws.max() == 99
    sampler.set_epoch(2, skip=7)
    assert np.array_equal(np.array(list(sampler)), draws[7:])
    ranks = [trainer.EpochBatchSampler(sizes, weights, 4, 500, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    assert not np.array_equal(np.array(list(ranks[0])), np.array(list(ranks[1])))


def test_config_overrides_and_errors(trainer, dataset_dir, tmp_path):
    from onehead.errors import ConfigError

    path = write_config(tmp_path, dataset_dir)
    config = trainer.load_config(str(path), ["train.learning_rate=1e-4", "data.train.0.weight=2",
                                             "train.mixed_precision=no"])
    assert config.train.learning_rate == 1e-4 and config.data.train[0].weight == 2.0
    assert config.train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="unknown key"):
        trainer.load_config(str(path), ["train.learnig_rate=1"])
    with pytest.raises(ConfigError, match="clip_length"):
        trainer.load_config(str(path), ["data.clip_length=4"])


@pytest.mark.parametrize("name", ["tiny.yaml", "tiny_stage2.yaml", "base.yaml", "base_stage2.yaml"])
def test_shipped_configs_parse(trainer, name):
    raw = yaml.safe_load((ROOT / "training" / "configs" / name).read_text())
    config = trainer.build_dataclass(trainer.ExperimentConfig, raw, name)
    assert config.train.stage == (2 if "stage2" in name else 1)


def test_missing_data_folder_exits_2(trainer, tmp_path, capsys):
    path = write_config(tmp_path, tmp_path / "no_such_dataset")
    assert trainer.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_dataset" in err[0] and "does not exist" in err[0]


def test_missing_sd_path_exits_2(trainer, dataset_dir, tmp_path, capsys):
    path = write_config(tmp_path, dataset_dir, model={"preset": "base", "sd_path": str(tmp_path / "no_sd")})
    assert trainer.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.sd_path" in err[0] and "no_sd" in err[0]


def test_bad_config_path_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.yaml" in lines[0], result.stderr


def test_gradient_checkpointing(trainer, dataset_dir, tmp_path):
    config = write_config(tmp_path, dataset_dir, max_steps=1, save_every=0, validate_every=0,
                          gradient_checkpointing=True)
    assert trainer.main(["--config", str(config)]) == 0


def test_fine_tune_into_warp_guidance_from_a_checkpoint(trainer, stage1_run, dataset_dir, tmp_path):
    """train.init_from with model.warp_guidance: the pose guider grows zero-weighted inputs, the run
    trains them, and its validation pictures and checkpoints work with the new control."""
    folder, _ = stage1_run
    init = folder / "run" / "checkpoints" / "step_000004"
    config = write_config(tmp_path, dataset_dir, model={"warp_guidance": True}, init_from=str(init),
                          max_steps=2, save_every=2, validate_every=2)
    assert trainer.main(["--config", str(config)]) == 0
    assert (tmp_path / "run" / "validation" / "step_000002.png").is_file()
    before, after = weights(init), weights(tmp_path / "run" / "checkpoints" / "step_000002")
    grown = after["pose_guider.body.0.weight"]
    assert grown.shape[1] == before["pose_guider.body.0.weight"].shape[1] + 4
    assert grown[:, -4:].abs().sum() > 0  # the new inputs trained
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_000002" / "animator.json").read_text())
    assert saved["warp_guidance"] is True
