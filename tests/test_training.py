"""onehead.training on CPU: losses, trained and frozen parameters, exact resume, checkpoints that
load, stage 2, config errors, and the command line of training/train_animator.py.

The exact-resume and stage tests run through helpers that take a FamilyCase (a TrainingFamily and
what to expect of it), once per family in CASES: a new family gets them by adding one entry. The
Animator runs as a smaller-than-tiny model on a synthetic set of 2 identities x 3 frames at 32 px;
a toy family (two parameter groups at different learning rates) checks that the loop takes any
family without changes. The whole file stays well under a minute."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml

from onehead.pipelines.families import register_family
from onehead.training import (EpochBatchSampler, ExperimentConfig, ParamGroup, TrainingFamily, get_family,
                              load_config, mixed_dataset, train)

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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, head):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("train_data") / "synthetic"
    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=3, views=1, size=32, seed=0,
                                       texture_size=64, progress=False))
    return out


def write_config(folder: Path, dataset_dir: Path, stage: int = 1, model=None, clip_length=None, **train) -> Path:
    config = {
        "model": model if model is not None else TEST_MODEL,
        "data": {"train": [{"path": str(dataset_dir), "weight": 1.0}], "validation": str(dataset_dir),
                 "clip_length": clip_length or (1 if stage == 1 else 2), "stage2_real_only": False},
        "train": {"output_dir": str(folder / "run"), "stage": stage, "seed": 3, "max_steps": 4,
                  "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 1, "weight_decay": 0.0,
                  "ema": {"enabled": True, "decay": 0.9}, "log_every": 1, "validate_every": 4,
                  "validation_items": 1, "validation_sampling_steps": 2, "save_every": 2,
                  "keep_checkpoints": 0, **train},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, *overrides: str, resume: str | None = None) -> dict:
    """What `train_animator.py --config CONFIG --set ... [--resume R]` does, through the library."""
    return train(load_config(config, list(overrides)), resume)


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in log_records(run_dir) if "loss" in r}


def animator_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, named like the Animator's state_dict (read without building one)."""
    from safetensors.torch import load_file

    tensors = dict(load_file(checkpoint / "animator.safetensors"))
    for unet in ("denoising_unet", "reference_unet"):
        tensors.update({f"{unet}.{k}": v for k, v in
                        load_file(checkpoint / unet / "diffusion_pytorch_model.safetensors").items()})
    return tensors


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]


# =========================================================================== a second family

class ToyFamily:
    """A two-layer denoiser on random vectors: two parameter groups (encoder at its own 1e-2 rate,
    like a person-specific family's new layers, head at train.learning_rate); stage 2 trains the
    head only. Items are a pure function of their index; all noise comes from the generator."""

    name = "test-toy"
    config_file = "toy.json"

    def check_config(self, config):
        if config.train.stage == 2 and not config.train.init_from:
            from onehead.errors import ConfigError
            raise ConfigError("toy stage 2 needs train.init_from")

    def build(self, model_config, train, resume_from):
        from safetensors.torch import load_file

        from onehead.training import resolve_checkpoint

        torch.manual_seed(model_config.get("init_seed", 0))
        width = model_config.get("width", 16)
        model = torch.nn.Sequential()
        model.add_module("encoder", torch.nn.Linear(8, width))
        model.add_module("act", torch.nn.Tanh())
        model.add_module("head", torch.nn.Linear(width, 8))
        source = resume_from or (train.init_from and resolve_checkpoint(train.init_from, Path(train.output_dir),
                                                                        self.config_file, need_state=False))
        if source:
            model.load_state_dict(load_file(Path(source) / "toy.safetensors"))
        model.requires_grad_(train.stage == 1)
        model.head.requires_grad_(True)
        return model

    def datasets(self, model, config):
        class Vectors(torch.utils.data.Dataset):
            def __init__(self, seed, count=12):
                self.seed, self.count = seed, count

            def __len__(self):
                return self.count

            def __getitem__(self, index):
                return {"x": torch.randn(8, generator=torch.Generator().manual_seed(self.seed * 1000 + index))}

        return mixed_dataset(config.data.train, lambda i, s: Vectors(i + 1)), Vectors(99, 2)

    def parameter_groups(self, model, train):
        groups = [ParamGroup("head", dict(model.head.named_parameters(prefix="head")))]
        if train.stage == 1:
            groups.insert(0, ParamGroup("encoder", dict(model.encoder.named_parameters(prefix="encoder")), lr=1e-2))
        return groups

    def loss(self, model, batch, generator):
        x = batch["x"]
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        return torch.nn.functional.mse_loss(model(x + 0.3 * noise), x)

    def validation_columns(self, model, batch, train):
        picture = torch.sigmoid(torch.stack([batch["x"], model(batch["x"])], 1))  # (B, 2, 8)
        return [p.view(-1, 1, 1, 2, 4).expand(-1, -1, 3, -1, -1) for p in picture.unbind(1)]

    def save_pretrained(self, model, directory):
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "toy.safetensors")
        (directory / "toy.json").write_text(json.dumps({"kind": self.name}))


def toy_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return dict(load_file(checkpoint / "toy.safetensors"))


# =========================================================================== the shared family tests

@dataclass
class FamilyCase:
    """What the shared training tests need to know about one family."""

    family: TrainingFamily
    model: dict  # the model section of a stage-1 config
    weights: Callable[[Path], dict]  # every tensor of a saved model folder, by name
    trains: dict[int, tuple[str, ...]]  # stage -> name prefixes whose weights must change
    frozen: dict[int, tuple[str, ...]]  # stage -> name prefixes whose weights must not change
    stage2_model: dict = field(default_factory=dict)  # model section of a stage-2 config (from init_from)
    stage2_clip_length: int = 2


CASES = {
    "onehead-animator": FamilyCase(
        get_family("onehead-animator"), TEST_MODEL, animator_weights,
        trains={1: ("denoising_unet.", "reference_unet.", "gaussian_field.", "pose_guider.", "domain_tokens."),
                2: ("temporal.",)},
        frozen={1: ("temporal.",), 2: ("denoising_unet.", "reference_unet.", "gaussian_field.", "pose_guider.",
                                       "domain_tokens.")}),
    "test-toy": FamilyCase(
        register_family("test-toy", "training", ToyFamily.config_file, training=ToyFamily).load_training()(),
        {"kind": "test-toy", "width": 16}, toy_weights,
        trains={1: ("encoder.", "head."), 2: ("head.",)}, frozen={1: (), 2: ("encoder.",)},
        stage2_model={"kind": "test-toy"}, stage2_clip_length=1),
}
_STAGE1_RUNS: dict[str, tuple[Path, Path]] = {}


def stage1(case: FamilyCase, dataset_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """4 stage-1 steps with checkpoints at steps 2 and 4 (run once per family and module)."""
    if case.family.name not in _STAGE1_RUNS:
        folder = tmp_path_factory.mktemp(f"stage1_{case.family.name}")
        config = write_config(folder, dataset_dir, model=case.model)
        result = run(config)
        assert result["step"] == 4 and result["checkpoint"].endswith("step_000004")
        _STAGE1_RUNS[case.family.name] = folder, config
    return _STAGE1_RUNS[case.family.name]


def check_stage_trains(case: FamilyCase, stage: int, before: Path, after: Path) -> None:
    """The stage's parts changed between two checkpoints, its frozen parts did not."""
    a, b = case.weights(before), case.weights(after)
    for part in case.trains[stage]:
        assert any(changed(a, b, part)), f"stage {stage}: {part} did not train"
    for part in case.frozen[stage]:
        assert not any(changed(a, b, part)), f"stage {stage}: {part} is frozen but changed"


def check_exact_resume(case: FamilyCase, folder: Path, config: Path, out: Path) -> None:
    """Resumed from step 2 of a 4-step run, a run gives the same losses (1e-6) and weights (1e-6)."""
    original = folder / "run"
    run(config, f"train.output_dir={out}", resume=str(original / "checkpoints" / "step_000002"))
    first, second = losses(original), losses(out)
    assert sorted(second) == [3, 4]
    for step in (3, 4):
        assert abs(first[step] - second[step]) <= 1e-6, (step, first[step], second[step])
    a, b = case.weights(original / "checkpoints" / "step_000004"), case.weights(out / "checkpoints" / "step_000004")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    ema_a, ema_b = (case.weights(r / "checkpoints" / "step_000004" / "ema") for r in (original, out))
    assert all(torch.allclose(ema_a[k], ema_b[k], atol=1e-6, rtol=0) for k in ema_a)


def check_stage2(case: FamilyCase, init: Path, dataset_dir: Path, folder: Path) -> None:
    config = write_config(folder, dataset_dir, stage=2, model=case.stage2_model, init_from=str(init),
                          clip_length=case.stage2_clip_length, max_steps=3, save_every=0, validate_every=3,
                          ema={"enabled": False})
    run(config)
    loss = losses(folder / "run")
    assert sorted(loss) == [1, 2, 3] and all(math.isfinite(v) for v in loss.values())
    check_stage_trains(case, 2, init, folder / "run" / "checkpoints" / "step_000003")
    assert (folder / "run" / "validation" / "step_000003.png").is_file()


@pytest.fixture(params=list(CASES))
def case(request) -> FamilyCase:
    return CASES[request.param]


@pytest.fixture
def stage1_run(case, dataset_dir, tmp_path_factory):
    return stage1(case, dataset_dir, tmp_path_factory)


@pytest.fixture
def animator_run(dataset_dir, tmp_path_factory):
    return stage1(CASES["onehead-animator"], dataset_dir, tmp_path_factory)


def test_stage1_trains(case, stage1_run):
    folder, _ = stage1_run
    run_dir = folder / "run"
    loss = losses(run_dir)
    assert sorted(loss) == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for v in loss.values())
    check_stage_trains(case, 1, run_dir / "checkpoints" / "step_000002", run_dir / "checkpoints" / "step_000004")
    assert (run_dir / "validation" / "step_000004.png").is_file()
    assert (run_dir / "latest.txt").read_text().strip() == "checkpoints/step_000004"
    state = run_dir / "checkpoints" / "step_000004" / "training_state"
    saved = json.loads((state / "state.json").read_text())
    assert saved["step"] == 4 and saved["family"] == case.family.name
    for name in ("optimizer.safetensors", "scheduler.json", "ema.safetensors", "rng_rank0.safetensors"):
        assert (state / name).is_file(), name
    record = log_records(run_dir)[0]
    assert {"loss", "lr", "samples_per_s", "grad_norm"} <= set(record)
    assert record["processes"] == 1 and record["global_batch"] == 2  # batch 2 x accumulation 1 x 1 process
    assert not list((run_dir / "checkpoints").glob(".*")), "no temporary folder is left behind"


def test_resume_is_exact(case, stage1_run, tmp_path):
    folder, config = stage1_run
    check_exact_resume(case, folder, config, tmp_path / "resumed")


def test_stage2_trains_only_its_parts(case, stage1_run, dataset_dir, tmp_path):
    folder, _ = stage1_run
    check_stage2(case, folder / "run" / "checkpoints" / "step_000004", dataset_dir, tmp_path)


def test_parameter_groups_keep_their_rates(dataset_dir, tmp_path_factory):
    """The toy family's encoder group trains at its own 1e-2 beside train.learning_rate (1e-3),
    both under the same warm-up; the optimizer state saved with the checkpoint keeps both."""
    from safetensors import safe_open

    folder, _ = stage1(CASES["test-toy"], dataset_dir, tmp_path_factory)
    records = [r for r in log_records(folder / "run") if "loss" in r]
    assert records[0]["lrs"] == pytest.approx({"encoder": 1e-2 / 2, "head": 1e-3 / 2})  # warm-up step 1 of 1
    assert records[1]["lrs"] == pytest.approx({"encoder": 1e-2, "head": 1e-3})
    optimizer = folder / "run" / "checkpoints" / "step_000004" / "training_state" / "optimizer.safetensors"
    with safe_open(optimizer, "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    assert [(g["name"], g["initial_lr"]) for g in groups] == [("encoder", 1e-2), ("head", 1e-3)]


# =========================================================================== the Animator

def test_checkpoint_loads(animator_run):
    from onehead.pipelines import Animator

    folder, _ = animator_run
    checkpoint = folder / "run" / "checkpoints" / "step_000004"
    animator = Animator.from_pretrained(checkpoint)
    assert animator.resolution == 32
    ema = Animator.from_pretrained(checkpoint / "ema")
    differs = [not torch.equal(a, b) for a, b in zip(animator.model.denoising_unet.parameters(),
                                                       ema.model.denoising_unet.parameters())]
    assert any(differs), "the EMA weights are an average, not the last weights"
    written = yaml.safe_load((checkpoint / "training_config.yaml").read_text())
    assert ExperimentConfig.from_dict(written).train.max_steps == 4  # a saved config loads back


def test_resume_latest_in_place(animator_run, tmp_path):
    """--resume latest continues a run in its own folder and keeps its log consistent."""
    import shutil

    folder, config = animator_run
    run_dir = tmp_path / "run"
    shutil.copytree(folder / "run", run_dir)
    run(config, f"train.output_dir={run_dir}", "train.max_steps=5", "train.validate_every=0", resume="latest")
    assert sorted(losses(run_dir)) == [1, 2, 3, 4, 5]
    assert (run_dir / "latest.txt").read_text().strip() == "checkpoints/step_000005"


def test_stage2_refuses_synthetic_data(dataset_dir):
    from onehead.errors import ConfigError
    from onehead.training import DataConfig, DataSource
    from onehead.training.gaussian_diffusion import build_train_dataset

    data = DataConfig(train=[DataSource(str(dataset_dir))], clip_length=2)
    with pytest.raises(ConfigError, match="real video only"):
        build_train_dataset(data, stage=2, size=32, seed=0)


def test_weighted_sampler_is_deterministic_and_shares():
    sizes, weights = [10, 90], [1.0, 3.0]
    sampler = EpochBatchSampler(sizes, weights, batch_size=4, batches_per_epoch=500, seed=1)
    sampler.set_epoch(2)
    draws = np.array(list(sampler))
    assert abs((draws < 10).mean() - 0.25) < 0.04  # each source gets its share, whatever its size
    assert draws.min() == 0 and draws.max() == 99
    sampler.set_epoch(2, skip=7)
    assert np.array_equal(np.array(list(sampler)), draws[7:])
    ranks = [EpochBatchSampler(sizes, weights, 4, 500, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    assert not np.array_equal(np.array(list(ranks[0])), np.array(list(ranks[1])))


def test_processes_see_the_items_of_accumulated_micro_batches():
    """The seeding rule's data half: 2 processes x accumulation 1 read, per step, the items that 1
    process x accumulation 2 reads in its two micro-batches (slot = micro x processes + rank)."""
    from onehead.training import micro_slot

    one = EpochBatchSampler([7, 5], [1.0, 2.0], batch_size=1, batches_per_epoch=6, seed=4)
    two = [EpochBatchSampler([7, 5], [1.0, 2.0], 1, 3, seed=4, rank=r, world_size=2) for r in (0, 1)]
    for s in (one, *two):
        s.set_epoch(1)
    single, ranks = list(one), [list(s) for s in two]
    for step in range(3):
        for micro in range(2):
            assert single[step * 2 + micro] == ranks[micro_slot(0, micro, 2)][step]
    assert [micro_slot(m, r, 2) for m in range(2) for r in range(2)] == [0, 1, 2, 3]


def test_config_overrides_and_errors(dataset_dir, tmp_path):
    from onehead.errors import ConfigError

    path = write_config(tmp_path, dataset_dir)
    config = load_config(str(path), ["train.learning_rate=1e-4", "data.train.0.weight=2", "train.mixed_precision=no"])
    assert config.train.learning_rate == 1e-4 and config.data.train[0].weight == 2.0
    assert config.train.mixed_precision == "no"
    assert config.family == "onehead-animator"
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(str(path), ["train.learnig_rate=1"])
    with pytest.raises(ConfigError, match="clip_length"):
        load_config(str(path), ["data.clip_length=4"])
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(str(path), ["train.lr_schedule=linear"])
    with pytest.raises(ConfigError, match="max_steps must be a whole number"):
        load_config(str(path), ["train.max_steps=2.5"])
    with pytest.raises(ConfigError, match="no such training family"):
        load_config(str(path), ["model.kind=nonsense"])


@pytest.mark.parametrize("name", ["tiny.yaml", "tiny_stage2.yaml", "base.yaml", "base_stage2.yaml", "small.yaml"])
def test_shipped_configs_parse(name):
    raw = yaml.safe_load((ROOT / "training" / "configs" / name).read_text())
    config = ExperimentConfig.from_dict(raw, name)
    assert config.train.stage == (2 if "stage2" in name else 1)
    assert config.family == "onehead-animator"


def test_missing_data_folder_exits_2(tmp_path):
    path = write_config(tmp_path, tmp_path / "no_such_dataset")
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "no_such_dataset" in err[0] and "does not exist" in err[0], result.stderr


def test_missing_sd_path_is_one_line(dataset_dir, tmp_path):
    from onehead.errors import ConfigError

    path = write_config(tmp_path, dataset_dir, model={"preset": "base", "sd_path": str(tmp_path / "no_sd")})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message and "model.sd_path" in message and "no_sd" in message


def test_bad_config_path_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.yaml" in lines[0], result.stderr


def test_gradient_checkpointing(dataset_dir, tmp_path, capsys):
    config = write_config(tmp_path, dataset_dir, max_steps=1, save_every=0, validate_every=0,
                          gradient_checkpointing=True, gradient_accumulation_steps=2, batch_size=1)
    assert run(config)["step"] == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert "1 process(es), global batch 2 (1 x 2 accumulation x 1)" in first, first
    assert log_records(tmp_path / "run")[0]["global_batch"] == 2


def test_fine_tune_into_warp_guidance_from_a_checkpoint(animator_run, dataset_dir, tmp_path):
    """train.init_from with model.warp_guidance: the pose guider grows zero-weighted inputs, the run
    trains them, and its validation pictures and checkpoints work with the new control."""
    folder, _ = animator_run
    init = folder / "run" / "checkpoints" / "step_000004"
    config = write_config(tmp_path, dataset_dir, model={"warp_guidance": True}, init_from=str(init),
                          max_steps=2, save_every=2, validate_every=2)
    run(config)
    assert (tmp_path / "run" / "validation" / "step_000002.png").is_file()
    before, after = animator_weights(init), animator_weights(tmp_path / "run" / "checkpoints" / "step_000002")
    grown = after["pose_guider.body.0.weight"]
    assert grown.shape[1] == before["pose_guider.body.0.weight"].shape[1] + 4
    assert grown[:, -4:].abs().sum() > 0  # the new inputs trained
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_000002" / "animator.json").read_text())
    assert saved["model"]["warp_guidance"] is True


def test_validation_grid_layout():
    """Rows: item x frame; columns side by side, a one-frame column repeated, another size resized."""
    from onehead.training import validation_grid

    reference = torch.zeros(2, 1, 3, 8, 8)
    target = torch.ones(2, 3, 3, 16, 16)
    grid = validation_grid([reference, target], max_frames=2)
    assert grid.shape == (2 * 2 * 16, 2 * 16, 3) and grid.dtype == np.uint8
    assert (grid[:, :16] == 0).all() and (grid[:, 16:] == 255).all()


def test_export_writes_a_model_folder_with_inference_settings(animator_run, tmp_path):
    """export_animator.py's work: the EMA weights with new inference settings, loaded back and checked."""
    from onehead.pipelines import Animator
    from onehead.training.gaussian_diffusion import export_model_folder, inference_overrides

    folder, _ = animator_run
    checkpoint = folder / "run" / "checkpoints" / "step_000004"
    settings = inference_overrides(["default_steps=1", "background=reference", "background_margin=0.04",
                                    "inference.initial_latent=zeros"])
    assert settings == {"steps": 1, "background": "reference", "background_margin": 0.04, "initial_latent": "zeros"}
    export_model_folder(checkpoint / "ema", tmp_path / "out", settings)
    loaded, ema = Animator.from_pretrained(tmp_path / "out"), Animator.from_pretrained(checkpoint / "ema")
    inference = loaded.inference
    assert (inference.steps, inference.background, inference.background_margin, inference.initial_latent) == \
        (1, "reference", 0.04, "zeros")
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder is left behind"


@pytest.mark.parametrize("assignment, message", [("background=sky", "background must be one of"),
                                                 ("nonsense_key=1", "unknown inference setting"),
                                                 ("resolution=64", "architecture, not an inference setting")])
def test_export_refuses_bad_settings_in_one_line(assignment, message):
    from onehead.errors import ConfigError
    from onehead.training.gaussian_diffusion import inference_overrides

    with pytest.raises(ConfigError, match=message) as error:
        inference_overrides([assignment])
    assert "\n" not in str(error.value)


def test_export_cli_exits_2_with_one_line(animator_run, tmp_path):
    folder, _ = animator_run
    checkpoint = folder / "run" / "checkpoints" / "step_000004"
    result = subprocess.run([sys.executable, str(ROOT / "training" / "export_animator.py"), str(checkpoint),
                             str(tmp_path / "out"), "--set", "background=sky"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "background" in lines[0] and "sky" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
