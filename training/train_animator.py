#!/usr/bin/env python
"""Train onehead's Animator (Gaussian-embedding diffusion) in two stages with accelerate.

    python training/train_animator.py --config training/configs/tiny.yaml
    python training/train_animator.py --config training/configs/tiny.yaml --resume latest
    python training/train_animator.py --config training/configs/tiny_stage2.yaml
    accelerate launch --num_processes 8 training/train_animator.py --config training/configs/base.yaml

Stage 1 trains single frames (clip_length 1) on real and synthetic data mixed by weight, each
item carrying its domain label, with every part but the temporal layers. Stage 2 starts from a
stage-1 checkpoint (`train.init_from`) and trains only the temporal layers on real clips.
training/README.md walks through both; the YAML files in training/configs are the examples.

Exact resume: the data order is a function of (seed, epoch), and the noise and timesteps of each
micro-batch come from a generator seeded with (seed, step, micro-batch, process). A checkpoint
holds the model, optimizer, LR schedule, EMA, step and RNG states, so training resumed from step
k gives the same losses from step k + 1 on as the run that never stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from onehead.errors import CheckpointError, ConfigError, MediaReadError, OneheadError

LOG_FILE = "train_log.jsonl"
LATEST_FILE = "latest.txt"
STATE_DIR = "training_state"


# =========================================================================== configuration

@dataclass
class DataSource:
    """One dataset folder (onehead's data format) and its sampling weight."""

    path: str
    weight: float = 1.0  # 0 leaves the folder out (e.g. the synthetic data in stage 2)


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    validation: str | None = None  # a held-out dataset folder; None: no validation pictures
    clip_length: int = 1  # frames per target clip: 1 in stage 1, N (e.g. 14) in stage 2
    num_workers: int = 0
    samples_per_epoch: int | None = None  # None: the number of clips in all sources
    # The paper trains stage 2 on real video only (its synthetic multi-view frames are not
    # continuous). onehead's synthetic sequences are continuous motion, so a demo without real
    # video may set this to false.
    stage2_real_only: bool = True


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999
    warmup: bool = True  # decay ramps up as (1 + step) / (10 + step) early on


@dataclass
class TrainConfig:
    output_dir: str = "runs/animator"
    stage: int = 1
    init_from: str | None = None  # stage 2: a stage-1 checkpoint (or run folder with latest.txt)
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    lr_schedule: str = "constant"  # "constant" or "cosine", both after a linear warm-up
    warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "no"  # "no", "fp16" or "bf16"
    gradient_checkpointing: bool = False
    allow_tf32: bool = False
    find_unused_parameters: bool = True  # DDP: parts of ReferenceNet feed no loss
    ema: EMAConfig = field(default_factory=EMAConfig)
    log_every: int = 10  # a plain log line every N steps (the progress bar updates every step)
    validate_every: int = 500  # 0: never
    validation_items: int = 4
    validation_sampling_steps: int = 8
    save_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 3  # newest N kept; 0 keeps every one


@dataclass
class ExperimentConfig:
    """Everything a YAML config holds: `model` (preset plus AnimatorConfig overrides), `data`, `train`."""

    model: dict = field(default_factory=lambda: {"preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


NESTED = {(ExperimentConfig, "data"): DataConfig, (ExperimentConfig, "train"): TrainConfig,
          (TrainConfig, "ema"): EMAConfig}


def build_dataclass(cls, raw, where: str):
    """cls(**raw) with unknown keys refused and numbers coerced (YAML reads `1e-4` as a string)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        key = f"{where}.{name}"
        if (cls, name) in NESTED:
            value = build_dataclass(NESTED[(cls, name)], value, key)
        elif cls is DataConfig and name == "train":
            if not isinstance(value, list):
                raise ConfigError(f"{key} must be a list of {{path, weight}} entries")
            value = [build_dataclass(DataSource, v if isinstance(v, dict) else {"path": v}, f"{key}[{i}]")
                     for i, v in enumerate(value)]
        else:
            default = known[name].default
            value = _coerce(value, default, key)
        values[name] = value
    return cls(**values)


def _coerce(value, default, key):
    if value is None or default is None or default is MISSING or isinstance(default, (str, dict, list)):
        return value
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    try:
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if kind is int and number != float(value):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return number


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set a.b.c=value` (value parsed as YAML; list items by index: data.train.0.weight)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = raw
    for key in keys[:-1]:
        if isinstance(node, list):
            node = node[_list_index(node, key, path)]
        else:
            node = node.setdefault(key, {})
    value = yaml.safe_load(text)
    if isinstance(node, list):
        node[_list_index(node, keys[-1], path)] = value
    elif isinstance(node, dict):
        node[keys[-1]] = value
    else:
        raise ConfigError(f"--set {assignment!r}: {'.'.join(keys[:-1])} is not a section")


def _list_index(node, key, path):
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"--set {path}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def load_config(path: str, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply `--set` overrides, check it; ConfigError on anything wrong."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: config file not found (the examples are in training/configs/)")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected the sections model, data and train")
    for assignment in overrides:
        apply_override(raw, assignment)
    config = build_dataclass(ExperimentConfig, raw, Path(path).name)
    check_config(config)
    return config


def check_config(config: ExperimentConfig) -> None:
    """Checks that need no data and no model: wrong values fail here, before anything loads."""
    t, d = config.train, config.data
    if t.mixed_precision in (False, None):  # YAML reads a bare `no` as false
        t.mixed_precision = "no"
    if t.stage not in (1, 2):
        raise ConfigError(f"train.stage must be 1 or 2, got {t.stage}")
    if t.stage == 1 and d.clip_length != 1:
        raise ConfigError(f"stage 1 trains single frames: data.clip_length must be 1, got {d.clip_length}")
    if t.stage == 2 and d.clip_length < 2:
        raise ConfigError("stage 2 trains the temporal layers: data.clip_length must be at least 2")
    if t.stage == 2 and not t.init_from:
        raise ConfigError("stage 2 starts from a stage-1 checkpoint: set train.init_from")
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"train.mixed_precision must be no, fp16 or bf16, got {t.mixed_precision!r}")
    if t.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule must be constant or cosine, got {t.lr_schedule!r}")
    if min(t.batch_size, t.gradient_accumulation_steps, t.max_steps) < 1:
        raise ConfigError("train.batch_size, gradient_accumulation_steps and max_steps must be at least 1")
    sources = [s for s in d.train if s.weight > 0]
    if not sources:
        raise ConfigError("data.train lists no dataset folder with a weight above 0")
    for i, source in enumerate(d.train):
        if source.weight > 0 and not Path(source.path).is_dir():
            raise MediaReadError(f"data.train[{i}].path {source.path}: dataset folder does not exist "
                                 "(datasets/README.md says how to make one)")
    if d.validation and not Path(d.validation).is_dir():
        raise MediaReadError(f"data.validation {d.validation}: dataset folder does not exist")
    sd_path = config.model.get("sd_path")
    if sd_path and not t.init_from and not Path(sd_path).is_dir():
        raise ConfigError(f"model.sd_path {sd_path}: no such folder; point it at a local diffusers-format "
                          "Stable Diffusion folder (unet/, vae/, scheduler/), e.g. --set model.sd_path=DIR")


# =========================================================================== data

def mix_seed(*numbers: int) -> int:
    """One 63-bit seed from several integers (independent streams for (seed, step, ...))."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, np.uint64)[0] >> 1)


class MixedDataset(torch.utils.data.ConcatDataset):
    """The configured sources back to back; `weights` are their sampling shares (any scale)."""

    def __init__(self, datasets, weights):
        super().__init__(datasets)
        self.sizes = [len(ds) for ds in datasets]
        self.weights = list(weights)

    def set_epoch(self, epoch):
        for ds in self.datasets:
            ds.set_epoch(epoch)


def build_train_dataset(data: DataConfig, stage: int, size: int, seed: int) -> MixedDataset:
    """Open every source with weight > 0. Items keep their meta.json domain label (the domain
    token); stage 2 refuses synthetic data unless data.stage2_real_only is false (paper, 4.1)."""
    from onehead.data.datasets import ReenactmentDataset

    datasets, weights = [], []
    for i, source in enumerate(data.train):
        if source.weight <= 0:
            continue
        ds = ReenactmentDataset(source.path, clip_length=data.clip_length, size=size, seed=mix_seed(seed, i))
        if stage == 2 and data.stage2_real_only and any(seq.meta.domain == "synthetic" for seq in ds.sequences):
            raise ConfigError(f"data.train[{i}] {source.path} holds synthetic sequences; stage 2 trains on real "
                              "video only: set its weight to 0 (or data.stage2_real_only: false for a demo)")
        datasets.append(ds)
        weights.append(source.weight)
    return MixedDataset(datasets, weights)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of a MixedDataset's indices; those of epoch e are a pure function of (seed, e).

    Each draw picks a source with probability proportional to its weight, then an item of that
    source uniformly (with replacement), whatever the sources' sizes. Every process draws the same
    batches_per_epoch x world x batch_size indices and keeps its own column, so processes see
    different items. set_epoch(e, skip) starts epoch e after `skip` batches: this is how a resumed
    run lands on the exact next batch.
    """

    def __init__(self, sizes, weights, batch_size, batches_per_epoch, seed, rank=0, world_size=1):
        self.sizes = torch.tensor(sizes, dtype=torch.float64)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
        self.batch_size = batch_size
        self.batches_per_epoch, self.seed = batches_per_epoch, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self):
        return self.batches_per_epoch - self.skip

    def __iter__(self):
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        count = self.batches_per_epoch * self.world_size * self.batch_size
        source = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        within = (torch.rand(count, generator=generator, dtype=torch.float64) * self.sizes[source]).long()
        draws = (self.offsets[source] + within).view(self.batches_per_epoch, self.world_size, self.batch_size)
        for b in range(self.skip, self.batches_per_epoch):
            yield draws[b, self.rank].tolist()


def batch_stream(dataset, sampler, start_epoch, skip, num_workers, device, seed):
    """Endless (epoch, batch) pairs on `device`, epoch after epoch, starting `skip` batches in."""
    from accelerate.utils import send_to_device
    from torch.utils.data import DataLoader, default_collate

    epoch = start_epoch
    while True:
        sampler.set_epoch(epoch, skip)
        dataset.set_epoch(epoch)  # the reference-frame draws of ReenactmentDataset
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=default_collate, num_workers=num_workers,
                            pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 1)))
        for batch in loader:
            yield epoch, send_to_device(batch, device, non_blocking=True)
        epoch, skip = epoch + 1, 0


# =========================================================================== EMA

class EMA:
    """Exponential moving average of named parameters, kept in float32."""

    def __init__(self, named_parameters: dict, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.shadow = {name: p.detach().float().clone() for name, p in named_parameters.items()}

    def current_decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, named_parameters: dict, step: int) -> None:
        weight = 1 - self.current_decay(step)
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names],
                             [named_parameters[n].detach().float() for n in names], weight)

    @contextlib.contextmanager
    def applied(self, named_parameters: dict):
        """Temporarily put the averaged weights into the model."""
        backup = {n: p.detach().clone() for n, p in named_parameters.items()}
        with torch.no_grad():
            for n, p in named_parameters.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in named_parameters.items():
                    p.copy_(backup[n])

    def load(self, tensors: dict) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise CheckpointError(f"the EMA state lacks {len(missing)} trainable parameters, e.g. {missing[0]}")
        for n in self.shadow:
            self.shadow[n].copy_(tensors[n])


# =========================================================================== RNG states

def rng_state_tensors() -> dict[str, torch.Tensor]:
    """torch (CPU and CUDA), numpy and python RNG states as plain tensors (for safetensors)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
        "python_mt": torch.tensor(mt, dtype=torch.int64),
        "python_meta": torch.tensor([version, gauss is not None, gauss or 0.0], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    return tensors


def set_rng_state_tensors(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    pos, has_gauss, cached = tensors["numpy_meta"].tolist()
    np.random.set_state(("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, has_next, gauss = tensors["python_meta"].tolist()
    random.setstate((int(version), tuple(tensors["python_mt"].tolist()), gauss if has_next else None))
    if torch.cuda.is_available():
        cuda = [tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in tensors]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def rng_preserved():
    """Run a block (validation) without moving any global RNG of the training run."""
    state = rng_state_tensors()
    try:
        yield
    finally:
        set_rng_state_tensors(state)


# =========================================================================== checkpoints

def optimizer_to_safetensors(state_dict: dict) -> tuple[dict, dict]:
    """An optimizer state_dict as (tensors, metadata): tensors under `state.<param>.<key>`."""
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    metadata = {"param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, metadata


def optimizer_from_safetensors(tensors: dict, metadata: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in json.loads(metadata["scalars"]).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = json.loads(metadata["param_groups"])
    for group in groups:  # JSON turned tuples (betas) into lists
        for key, value in group.items():
            if key != "params" and isinstance(value, list):
                group[key] = tuple(value)
    return {"state": state, "param_groups": groups}


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def save_checkpoint(run, step: int) -> Path:
    """Write output_dir/checkpoints/step_XXXXXX atomically (temp folder, then os.replace)."""
    from safetensors.torch import save_file

    acc = run.accelerator
    final = run.output_dir / "checkpoints" / f"step_{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        run.animator.save_pretrained(tmp)  # config.json + safetensors: what Animator.from_pretrained reads
        if run.ema is not None:
            with run.ema.applied(run.named_trainable):
                run.animator.save_pretrained(tmp / "ema")
        (tmp / STATE_DIR).mkdir()
        (tmp / "training_config.yaml").write_text(yaml.safe_dump(asdict(run.config), sort_keys=False))
    acc.wait_for_everyone()
    save_file(rng_state_tensors(), tmp / STATE_DIR / f"rng_rank{acc.process_index}.safetensors")
    if acc.is_main_process:
        tensors, metadata = optimizer_to_safetensors(run.optimizer.state_dict())
        save_file(tensors, tmp / STATE_DIR / "optimizer.safetensors", metadata=metadata)
        write_json_atomic(tmp / STATE_DIR / "scheduler.json", run.scheduler.state_dict())
        if acc.scaler is not None:
            write_json_atomic(tmp / STATE_DIR / "scaler.json", acc.scaler.state_dict())
        if run.ema is not None:
            save_file(run.ema.shadow, tmp / STATE_DIR / "ema.safetensors")
        write_json_atomic(tmp / STATE_DIR / "state.json", {
            "step": step, "stage": run.config.train.stage, "seed": run.config.train.seed,
            "world_size": acc.num_processes, "batch_size": run.config.train.batch_size,
            "gradient_accumulation_steps": run.config.train.gradient_accumulation_steps,
            "batches_per_epoch": run.batches_per_epoch})
    acc.wait_for_everyone()
    if acc.is_main_process:
        _replace_dir(tmp, final)
        (run.output_dir / (LATEST_FILE + ".tmp")).write_text(str(final.relative_to(run.output_dir)) + "\n")
        os.replace(run.output_dir / (LATEST_FILE + ".tmp"), run.output_dir / LATEST_FILE)
        _prune_checkpoints(final.parent, run.config.train.keep_checkpoints)
    acc.wait_for_everyone()
    return final


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _prune_checkpoints(folder: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(value: str, output_dir: Path, need_state: bool = True) -> Path:
    """A checkpoint folder from `latest` (this run), a run folder (its latest.txt) or a checkpoint."""
    path = output_dir if value == "latest" else Path(value)
    if (path / LATEST_FILE).is_file():
        path = path / (path / LATEST_FILE).read_text().strip()
    from onehead.pipelines.animator import CONFIG_FILE

    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{value}: no checkpoint there (neither {LATEST_FILE} nor an Animator {CONFIG_FILE})")
    if need_state and not (path / STATE_DIR / "state.json").is_file():
        raise CheckpointError(f"{path}: has no {STATE_DIR}/ to resume from (use it as train.init_from instead)")
    return path


def load_training_state(run, checkpoint: Path) -> dict:
    """Restore optimizer, LR schedule, scaler, EMA and this process's RNG states; returns state.json."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = checkpoint / STATE_DIR
    state = json.loads((folder / "state.json").read_text())
    if state["stage"] != run.config.train.stage:
        raise ConfigError(f"{checkpoint} is a stage-{state['stage']} checkpoint but the config says stage "
                          f"{run.config.train.stage}; start a new stage with train.init_from instead")
    with safe_open(folder / "optimizer.safetensors", "pt") as f:
        metadata = f.metadata()
    run.optimizer.load_state_dict(optimizer_from_safetensors(load_file(folder / "optimizer.safetensors"), metadata))
    run.scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    if run.accelerator.scaler is not None and (folder / "scaler.json").is_file():
        run.accelerator.scaler.load_state_dict(json.loads((folder / "scaler.json").read_text()))
    if run.ema is not None:
        if (folder / "ema.safetensors").is_file():
            run.ema.load(load_file(folder / "ema.safetensors"))
        else:
            print(f"note: {checkpoint} has no EMA state; the EMA starts from the current weights", file=sys.stderr)
    rng_file = folder / f"rng_rank{run.accelerator.process_index}.safetensors"
    if rng_file.is_file():
        set_rng_state_tensors(load_file(rng_file))
    if state["world_size"] != run.accelerator.num_processes or state["batch_size"] != run.config.train.batch_size:
        print("note: the process count or batch size changed since the checkpoint; the data order will differ "
              "from the original run", file=sys.stderr)
    return state


# =========================================================================== validation

def validation_batch(dataset, count: int) -> dict:
    """`count` items spread evenly over the validation set (sampled with the Animator's
    inference_domain token, `real` as in the paper, whatever their own label)."""
    from torch.utils.data import default_collate

    indices = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return default_collate([dataset[int(i)] for i in indices])


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def control_preview(animator, batch) -> torch.Tensor:
    """The splatted control maps' first three channels as (B, T, 3, H, W) in [0, 1]."""
    clips, frames = batch["target"].shape[:2]
    maps = animator.batch_control(batch)[:, :animator.config.control_channels]
    maps = maps.float().view(clips, frames, *maps.shape[1:])[:, :, :3]
    if maps.shape[2] < 3:
        maps = torch.cat([maps, maps[:, :, :1].expand(-1, -1, 3 - maps.shape[2], -1, -1)], 2)
    return (maps * 0.5 + 0.5).clamp(0, 1)  # the features are tanh'd into [-1, 1]


def write_validation_grid(path: Path, batch, samples, control, max_frames: int = 4) -> None:
    """Rows: item x frame; columns: reference | target | control (when available) | sample."""
    from PIL import Image

    T = samples.shape[1]
    frames = np.linspace(0, T - 1, min(T, max_frames)).round().astype(int)
    size = samples.shape[-1]
    resize = torch.nn.functional.interpolate
    rows = []
    for b in range(samples.shape[0]):
        for t in frames:
            tiles = [batch["reference"][b], batch["target"][b, t]]
            if control is not None:
                tiles.append(control[b, t])
            tiles.append(samples[b, t])
            tiles = [resize(x[None].float().cpu(), size=samples.shape[-2:], mode="bilinear",
                            align_corners=False)[0] if x.shape[-1] != size else x for x in tiles]
            rows.append(np.concatenate([to_uint8(x) for x in tiles], 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    Image.fromarray(np.concatenate(rows, 0)).save(tmp)
    os.replace(tmp, path)


def validate(run, step: int) -> Path | None:
    """Sample the validation items and write output_dir/validation/step_XXXXXX.png (main process)."""
    from accelerate.utils import send_to_device

    if run.validation_batch is None or not run.accelerator.is_main_process:
        return None
    train = run.config.train
    batch = send_to_device(run.validation_batch, run.accelerator.device)
    ema = run.ema.applied(run.named_trainable) if run.ema is not None else contextlib.nullcontext()
    with rng_preserved(), ema, torch.no_grad(), run.accelerator.autocast():
        samples = run.animator.sample_batch(batch, num_steps=train.validation_sampling_steps, seed=train.seed)
        control = control_preview(run.animator, batch)
    run.animator.train()
    path = run.output_dir / "validation" / f"step_{step:06d}.png"
    write_validation_grid(path, batch, samples, control)
    return path


# =========================================================================== training

@dataclass
class Run:
    """What the training loop and the checkpoint functions share."""

    config: ExperimentConfig
    accelerator: object
    animator: object  # the unwrapped Animator
    loss_module: object  # the prepared (possibly DDP-wrapped) LossModule
    optimizer: object
    scheduler: object
    ema: EMA | None
    named_trainable: dict
    output_dir: Path
    batches_per_epoch: int
    validation_batch: dict | None
    dataset: object = None  # the MixedDataset


class LossModule(torch.nn.Module):
    """forward = Animator.training_loss, so DDP and autocast see the training computation."""

    def __init__(self, animator):
        super().__init__()
        self.animator = animator

    def forward(self, batch, generator=None):
        return self.animator.training_loss(batch, generator=generator)


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return factor


def build_animator(config: ExperimentConfig, resume_from: Path | None):
    """A fresh Animator (preset + overrides), the stage-2 init, or the checkpoint being resumed."""
    from onehead.pipelines.animator import Animator, AnimatorConfig

    train = config.train
    if resume_from is not None:
        animator = Animator.from_pretrained(resume_from)
    elif train.init_from:
        # the checkpoint carries its config; keys set in the model section change it (e.g. warp_guidance)
        overrides = {k: v for k, v in config.model.items() if k != "preset"}
        animator = Animator.from_pretrained(resolve_checkpoint(train.init_from, Path(train.output_dir), False),
                                            overrides=overrides)
    else:
        overrides = dict(config.model)
        preset = overrides.pop("preset", "tiny")
        model_config = AnimatorConfig.from_preset(preset, **overrides)  # ConfigError on unknown keys
        animator = Animator.from_config(model_config)
    animator.set_stage(train.stage)
    if train.gradient_checkpointing:
        animator.enable_gradient_checkpointing()
    return animator


def setup(config: ExperimentConfig, resume: str | None) -> tuple[Run, int, int]:
    """Build everything; returns (run, start_step, start micro-batch) after any resume."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    train = config.train
    output_dir = Path(train.output_dir)
    resume_from = resolve_checkpoint(resume, output_dir) if resume else None
    # several processes without CUDA (torchrun on CPU) only form a group with accelerate's cpu flag
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=multi_cpu, mixed_precision=train.mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train.find_unused_parameters)])
    if train.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if resume_from is None:  # a resumed run takes its RNG states from the checkpoint instead
        seed = mix_seed(train.seed, accelerator.process_index)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    animator = build_animator(config, resume_from)
    size = animator.config.resolution
    dataset = build_train_dataset(config.data, train.stage, size, train.seed)
    validation = None
    if config.data.validation:
        from onehead.data.datasets import ReenactmentDataset
        held_out = ReenactmentDataset(config.data.validation, clip_length=config.data.clip_length, size=size,
                                      seed=train.seed)
        validation = validation_batch(held_out, train.validation_items)

    named_trainable = trainable_by_name(animator)
    params = list(named_trainable.values())
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                                  eps=train.adam_epsilon, weight_decay=train.weight_decay)
    # the scheduler is stepped by hand once per optimizer step (not prepared: accelerate would step
    # it once per process), so warmup_steps and max_steps count optimizer steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(train.lr_schedule, train.warmup_steps, train.max_steps))
    # the dataloader is not prepared: EpochBatchSampler shards by process itself, which keeps the
    # data order a pure function of (seed, epoch) for exact resume
    loss_module, optimizer = accelerator.prepare(LossModule(animator), optimizer)
    ema = EMA(named_trainable, train.ema.decay, train.ema.warmup) if train.ema.enabled else None

    per_step = train.batch_size * accelerator.num_processes * train.gradient_accumulation_steps
    samples = config.data.samples_per_epoch or len(dataset)
    batches_per_epoch = max(1, math.ceil(samples / per_step)) * train.gradient_accumulation_steps
    run = Run(config, accelerator, animator, loss_module, optimizer, scheduler, ema, named_trainable,
              output_dir, batches_per_epoch, validation, dataset)
    start_step = 0
    if resume_from is not None:
        state = load_training_state(run, resume_from)
        start_step = state["step"]
        run.batches_per_epoch = state.get("batches_per_epoch", batches_per_epoch)
    return run, start_step, start_step * train.gradient_accumulation_steps


def trainable_by_name(animator) -> dict:
    """{name: parameter} of Animator.trainable_parameters(), in the Animator's order."""
    wanted = {id(p) for p in animator.trainable_parameters()}
    named = {n: p for n, p in animator.named_parameters() if id(p) in wanted}
    if not named:
        raise ConfigError(f"stage {animator.stage}: the Animator has no trainable parameter")
    return named


def open_log(output_dir: Path, start_step: int):
    """train_log.jsonl, appended; a resumed run first drops the lines after its checkpoint."""
    path = output_dir / LOG_FILE
    if start_step > 0 and path.is_file():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step]
        path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def micro_generator(device, seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The noise and timestep generator of one micro-batch: a pure function of its position."""
    return torch.Generator(device=device).manual_seed(mix_seed(seed, step, micro, rank, 2))


def train(config: ExperimentConfig, resume: str | None = None) -> dict:
    """The training loop; returns {"step", "loss", "checkpoint"} of the last step."""
    from tqdm import tqdm

    run, step, micro_index = setup(config, resume)
    train_cfg, acc = config.train, run.accelerator
    main = acc.is_main_process
    run.output_dir.mkdir(parents=True, exist_ok=True)
    log = open_log(run.output_dir, step) if main else None
    if main and step == 0:
        (run.output_dir / "training_config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    stream = batch_stream(run.dataset, _sampler(run), micro_index // run.batches_per_epoch,
                          micro_index % run.batches_per_epoch, config.data.num_workers, acc.device, train_cfg.seed)
    bar = tqdm(total=train_cfg.max_steps, initial=step, disable=not main, file=sys.stdout, dynamic_ncols=True,
               desc=f"stage {train_cfg.stage}", unit="step")
    samples_per_step = train_cfg.batch_size * acc.num_processes * train_cfg.gradient_accumulation_steps
    run.loss_module.train()
    loss, checkpoint = float("nan"), None
    while step < train_cfg.max_steps:
        start = time.perf_counter()
        lr = run.scheduler.get_last_lr()[0]  # the rate this step uses
        loss, grad_norm, epoch = train_step(run, stream, step)
        step += 1
        if run.ema is not None:
            run.ema.update(run.named_trainable, step)
        record = {"step": step, "epoch": epoch, "loss": loss, "lr": lr,
                  "grad_norm": grad_norm, "samples_per_s": samples_per_step / (time.perf_counter() - start)}
        if main:
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}", sps=f"{record['samples_per_s']:.1f}")
            if step % train_cfg.log_every == 0:
                bar.write(f"step {step} loss {loss:.5f} lr {record['lr']:.3e} grad_norm {grad_norm:.3f} "
                          f"{record['samples_per_s']:.2f} samples/s")
        if train_cfg.save_every and step % train_cfg.save_every == 0 or step == train_cfg.max_steps:
            checkpoint = save_checkpoint(run, step)
            if main:
                bar.write(f"saved {checkpoint}")
        if train_cfg.validate_every and (step % train_cfg.validate_every == 0 or step == train_cfg.max_steps):
            picture = validate(run, step)
            if picture is not None:
                log.write(json.dumps({"step": step, "validation": str(picture)}) + "\n")
                log.flush()
            acc.wait_for_everyone()
    bar.close()
    if log is not None:
        log.close()
    acc.end_training()
    return {"step": step, "loss": loss, "checkpoint": str(checkpoint) if checkpoint else None}


def _sampler(run) -> EpochBatchSampler:
    acc = run.accelerator
    return EpochBatchSampler(run.dataset.sizes, run.dataset.weights, run.config.train.batch_size, run.batches_per_epoch,
                             run.config.train.seed, acc.process_index, acc.num_processes)


def train_step(run, stream, step: int) -> tuple[float, float, int]:
    """One optimizer step over gradient_accumulation_steps micro-batches; (mean loss, grad norm, epoch)."""
    train_cfg, acc = run.config.train, run.accelerator
    losses, grad_norm = [], float("nan")
    for micro in range(train_cfg.gradient_accumulation_steps):
        epoch, batch = next(stream)
        generator = micro_generator(acc.device, train_cfg.seed, step, micro, acc.process_index)
        with acc.accumulate(run.loss_module):
            loss = run.loss_module(batch, generator=generator)
            acc.backward(loss)
            if acc.sync_gradients:
                if train_cfg.max_grad_norm > 0:
                    grad_norm = float(acc.clip_grad_norm_(list(run.named_trainable.values()), train_cfg.max_grad_norm))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    if not acc.sync_gradients:
        raise RuntimeError("internal: the last micro-batch of a step did not synchronise gradients")
    run.scheduler.step()
    mean = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
    if not math.isfinite(mean):
        raise FloatingPointError(f"the loss is {mean} at step {step + 1}: lower train.learning_rate, raise "
                                 "train.warmup_steps, or use bf16 instead of fp16")
    return mean, grad_norm, epoch


# =========================================================================== command line

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train onehead's Animator (stage 1 or 2) with accelerate.")
    p.add_argument("--config", required=True, help="YAML config (examples in training/configs/)")
    p.add_argument("--output-dir", default=None, help="overrides train.output_dir")
    p.add_argument("--resume", default=None, metavar="latest|DIR",
                   help="continue from the newest checkpoint of the output dir, or from a checkpoint folder")
    p.add_argument("--max-steps", type=int, default=None, help="overrides train.max_steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.learning_rate=1e-4 (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    try:
        config = load_config(args.config, overrides)
        result = train(config, args.resume)
    except OneheadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # one summary line, from the main process
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
