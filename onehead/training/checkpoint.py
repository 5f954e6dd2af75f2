"""Checkpoint folders: written atomically, the newest N kept, found again by `latest`.

    OUTPUT_DIR/latest.txt                 checkpoints/step_XXXXXX of the newest checkpoint
    OUTPUT_DIR/checkpoints/step_XXXXXX/   the family's model folder (its save_pretrained) [+ ema/],
        training_config.yaml, training_state/ (state.json, optimizer.safetensors, scheduler.json,
        [scaler.json, ema.safetensors], rng_rank<i>.safetensors)

Nothing is pickled: tensors are safetensors, the rest JSON. A checkpoint appears whole or not at
all (onehead.files.atomic_path), so an interrupted save never leaves a half folder behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

from onehead.errors import CheckpointError, ConfigError
from onehead.files import atomic_path, write_json_atomic, write_text_atomic
from onehead.training.state import (optimizer_from_safetensors, optimizer_to_safetensors, rng_state_tensors,
                                    set_rng_state_tensors)

LATEST_FILE = "latest.txt"
STATE_DIR = "training_state"
CHECKPOINTS_DIR = "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def config_yaml(config) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_checkpoint(trainer, step: int) -> Path:
    """Write output_dir/checkpoints/step_XXXXXX (every process takes part: each saves its RNG state)."""
    from accelerate.utils import broadcast_object_list
    from safetensors.torch import save_file

    acc = trainer.accelerator
    main = acc.is_main_process
    final = trainer.output_dir / CHECKPOINTS_DIR / checkpoint_name(step)
    with atomic_path(final) if main else contextlib.nullcontext() as tmp:
        shared = [str(tmp) if main else None]
        if acc.num_processes > 1:
            broadcast_object_list(shared)
        tmp = Path(shared[0])
        if main:
            trainer.family.save_pretrained(trainer.model, tmp)
            if trainer.ema is not None:
                with trainer.ema.applied(trainer.named_trainable):
                    trainer.family.save_pretrained(trainer.model, tmp / "ema")
            (tmp / STATE_DIR).mkdir()
            (tmp / "training_config.yaml").write_text(config_yaml(trainer.config))
        acc.wait_for_everyone()
        save_file(rng_state_tensors(), tmp / STATE_DIR / f"rng_rank{acc.process_index}.safetensors")
        if main:
            state = tmp / STATE_DIR
            tensors, metadata = optimizer_to_safetensors(trainer.optimizer.state_dict())
            save_file(tensors, state / "optimizer.safetensors", metadata=metadata)
            write_json_atomic(state / "scheduler.json", trainer.scheduler.state_dict())
            if acc.scaler is not None:
                write_json_atomic(state / "scaler.json", acc.scaler.state_dict())
            if trainer.ema is not None:
                save_file(trainer.ema.shadow, state / "ema.safetensors")
            train = trainer.config.train
            write_json_atomic(state / "state.json", {
                "step": step, "family": trainer.family.name, "stage": train.stage, "seed": train.seed,
                "world_size": acc.num_processes, "batch_size": train.batch_size,
                "gradient_accumulation_steps": train.gradient_accumulation_steps,
                "batches_per_epoch": trainer.batches_per_epoch})
        acc.wait_for_everyone()
    if main:  # the folder is in place now
        write_text_atomic(trainer.output_dir / LATEST_FILE, str(final.relative_to(trainer.output_dir)) + "\n")
        prune_checkpoints(final.parent, trainer.config.train.keep_checkpoints)
    acc.wait_for_everyone()
    return final


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` step_* folders (keep 0: delete none)."""
    if keep <= 0:
        return
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(value: str | Path, output_dir: Path, config_file: str, need_state: bool = True) -> Path:
    """A checkpoint folder from `latest` (this run), a run folder (its latest.txt) or a checkpoint.

    `config_file` is the file that marks the family's model folder (e.g. animator.json); with
    need_state the folder must also hold training_state/ (to resume, not just to start from).
    """
    path = Path(output_dir) if str(value) == "latest" else Path(value)
    if (path / LATEST_FILE).is_file():
        path = path / (path / LATEST_FILE).read_text().strip()
    if not (path / config_file).is_file():
        raise CheckpointError(f"{value}: no checkpoint there (neither {LATEST_FILE} nor a model {config_file})")
    if need_state and not (path / STATE_DIR / "state.json").is_file():
        raise CheckpointError(f"{path}: has no {STATE_DIR}/ to resume from (use it as train.init_from instead)")
    return path


def load_training_state(trainer, checkpoint: Path) -> dict:
    """Restore optimizer, LR schedule, scaler, EMA and this process's RNG states; returns state.json."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = checkpoint / STATE_DIR
    state = json.loads((folder / "state.json").read_text())
    train = trainer.config.train
    if state.get("family", trainer.family.name) != trainer.family.name:
        raise ConfigError(f"{checkpoint} is a {state['family']} checkpoint but the config trains "
                          f"{trainer.family.name}")
    if state["stage"] != train.stage:
        raise ConfigError(f"{checkpoint} is a stage-{state['stage']} checkpoint but the config says stage "
                          f"{train.stage}; start a new stage with train.init_from instead")
    with safe_open(folder / "optimizer.safetensors", "pt") as f:
        metadata = f.metadata()
    trainer.optimizer.load_state_dict(optimizer_from_safetensors(load_file(folder / "optimizer.safetensors"), metadata))
    trainer.scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    acc = trainer.accelerator
    if acc.scaler is not None and (folder / "scaler.json").is_file():
        acc.scaler.load_state_dict(json.loads((folder / "scaler.json").read_text()))
    if trainer.ema is not None:
        if (folder / "ema.safetensors").is_file():
            trainer.ema.load(load_file(folder / "ema.safetensors"))
        else:
            print(f"note: {checkpoint} has no EMA state; the EMA starts from the current weights", file=sys.stderr)
    rng_file = folder / f"rng_rank{acc.process_index}.safetensors"
    if rng_file.is_file():
        set_rng_state_tensors(load_file(rng_file))
    if state["world_size"] != acc.num_processes or state["batch_size"] != train.batch_size:
        print("note: the process count or batch size changed since the checkpoint; the data order will differ "
              "from the original run", file=sys.stderr)
    return state
