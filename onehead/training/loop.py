"""The accelerate training loop, the same for every model family.

    from onehead.training import load_config, train
    result = train(load_config("training/configs/tiny.yaml"))   # {"step", "loss", "checkpoint"}

`Trainer(config)` builds everything (the family from `model.kind`, accelerate, optimizer with the
family's parameter groups, LR schedule, EMA) and resumes when told; `fit()` runs the steps,
logs, validates and saves. Randomness follows onehead.training.seeding, which is what makes
resume exact and several processes equal to gradient accumulation.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from onehead.errors import ConfigError
from onehead.training.checkpoint import config_yaml, load_training_state, resolve_checkpoint, save_checkpoint
from onehead.training.config import ExperimentConfig
from onehead.training.data import EpochBatchSampler, batch_stream, spread_batch
from onehead.training.ema import EMA
from onehead.training.family import TrainingFamily, get_family
from onehead.training.seeding import micro_generator, micro_slot, seed_globals
from onehead.training.validation import validate

LOG_FILE = "train_log.jsonl"


class FamilyLoss(torch.nn.Module):
    """forward = family.loss(model, ...), so DDP and autocast see the training computation."""

    def __init__(self, family: TrainingFamily, model: torch.nn.Module):
        super().__init__()
        self.family, self.model = family, model

    def forward(self, batch, generator=None):
        return self.family.loss(self.model, batch, generator)


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int):
    """The LR factor of optimizer step `step`: linear warm-up, then constant or cosine."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return factor


def build_optimizer(groups, train) -> torch.optim.AdamW:
    """AdamW over the family's parameter groups (each keeps its name, rate and weight decay)."""
    return torch.optim.AdamW(
        [{"params": list(g.params.values()), "name": g.name,
          "lr": train.learning_rate if g.lr is None else g.lr,
          "weight_decay": train.weight_decay if g.weight_decay is None else g.weight_decay} for g in groups],
        lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon,
        weight_decay=train.weight_decay)


def open_log(output_dir: Path, start_step: int):
    """train_log.jsonl, appended; a resumed run first drops the lines after its checkpoint."""
    path = output_dir / LOG_FILE
    if start_step > 0 and path.is_file():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step]
        path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


class Trainer:
    """One training run: built (and resumed) on construction, run by fit()."""

    def __init__(self, config: ExperimentConfig, resume: str | None = None, family: TrainingFamily | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.config = config
        self.family = family if family is not None else get_family(config.family)
        train = config.train
        self.output_dir = Path(train.output_dir)
        resume_from = resolve_checkpoint(resume, self.output_dir, self.family.config_file) if resume else None
        # several processes without CUDA (torchrun on CPU) only form a group with accelerate's cpu flag
        multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        self.accelerator = acc = Accelerator(
            cpu=multi_cpu, mixed_precision=train.mixed_precision,
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train.find_unused_parameters)])
        if train.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if resume_from is None:  # a resumed run takes its RNG states from the checkpoint instead
            seed_globals(train.seed, acc.process_index)

        self.model = self.family.build(dict(config.model), train, resume_from)
        self.dataset, held_out = self.family.datasets(self.model, config)
        self.validation_batch = spread_batch(held_out, train.validation_items) if held_out is not None else None

        self.groups = self.family.parameter_groups(self.model, train)
        self.named_trainable = {n: p for g in self.groups for n, p in g.params.items()}
        if not self.named_trainable:
            raise ConfigError(f"stage {train.stage}: the {self.family.name} model has no trainable parameter")
        optimizer = build_optimizer(self.groups, train)
        # the scheduler is stepped by hand once per optimizer step (not prepared: accelerate would step
        # it once per process), so warmup_steps and max_steps count optimizer steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(train.lr_schedule, train.warmup_steps, train.max_steps))
        # the dataloader is not prepared: EpochBatchSampler shards by process itself, which keeps the
        # data order a pure function of (seed, epoch) for exact resume
        self.loss_module, self.optimizer = acc.prepare(FamilyLoss(self.family, self.model), optimizer)
        self.ema = EMA(self.named_trainable, train.ema.decay, train.ema.warmup) if train.ema.enabled else None

        samples = config.data.samples_per_epoch or len(self.dataset)
        self.batches_per_epoch = max(1, math.ceil(samples / self.global_batch)) * train.gradient_accumulation_steps
        self.step = 0
        if resume_from is not None:
            state = load_training_state(self, resume_from)
            self.step = state["step"]
            self.batches_per_epoch = state.get("batches_per_epoch", self.batches_per_epoch)

    @property
    def global_batch(self) -> int:
        """Items per optimizer step: batch_size x gradient accumulation x processes."""
        train = self.config.train
        return train.batch_size * train.gradient_accumulation_steps * self.accelerator.num_processes

    def sampler(self) -> EpochBatchSampler:
        acc, train = self.accelerator, self.config.train
        return EpochBatchSampler(self.dataset.sizes, self.dataset.weights, train.batch_size, self.batches_per_epoch,
                                 train.seed, acc.process_index, acc.num_processes)

    def fit(self) -> dict:
        """Train to train.max_steps; returns {"step", "loss", "checkpoint"} of the last step."""
        from tqdm import tqdm

        cfg, acc = self.config.train, self.accelerator
        main = acc.is_main_process
        step = self.step
        micro_index = step * cfg.gradient_accumulation_steps
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        log = open_log(self.output_dir, step) if main else None
        if main and step == 0:
            (self.output_dir / "training_config.yaml").write_text(config_yaml(self.config))
        stream = batch_stream(self.dataset, self.sampler(), micro_index // self.batches_per_epoch,
                              micro_index % self.batches_per_epoch, self.config.data.num_workers, acc.device, cfg.seed)
        if main:
            print(f"training {self.family.name} stage {cfg.stage} from step {step} to {cfg.max_steps}: "
                  f"{acc.num_processes} process(es), global batch {self.global_batch} "
                  f"({cfg.batch_size} x {cfg.gradient_accumulation_steps} accumulation x {acc.num_processes}), "
                  f"{sum(p.numel() for p in self.named_trainable.values()):,} trainable parameters", flush=True)
        bar = tqdm(total=cfg.max_steps, initial=step, disable=not main, file=sys.stdout, dynamic_ncols=True,
                   desc=f"stage {cfg.stage}", unit="step")
        self.loss_module.train()
        loss, checkpoint = float("nan"), None
        while step < cfg.max_steps:
            start = time.perf_counter()
            rates = self.scheduler.get_last_lr()  # the rates this step uses
            loss, grad_norm, epoch = self.train_step(stream, step)
            step += 1
            self.step = step
            if self.ema is not None:
                self.ema.update(self.named_trainable, step)
            record = {"step": step, "epoch": epoch, "loss": loss, "lr": rates[0], "grad_norm": grad_norm,
                      "samples_per_s": self.global_batch / (time.perf_counter() - start),
                      "processes": acc.num_processes, "global_batch": self.global_batch}
            if len(rates) > 1:
                record["lrs"] = {g.name: r for g, r in zip(self.groups, rates)}
            if main:
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{rates[0]:.2e}", sps=f"{record['samples_per_s']:.1f}")
                if step % cfg.log_every == 0:
                    bar.write(f"step {step} loss {loss:.5f} lr {rates[0]:.3e} grad_norm {grad_norm:.3f} "
                              f"{record['samples_per_s']:.2f} samples/s")
            if cfg.save_every and step % cfg.save_every == 0 or step == cfg.max_steps:
                checkpoint = save_checkpoint(self, step)
                if main:
                    bar.write(f"saved {checkpoint}")
            if cfg.validate_every and (step % cfg.validate_every == 0 or step == cfg.max_steps):
                picture = validate(self, step)
                if picture is not None:
                    log.write(json.dumps({"step": step, "validation": str(picture)}) + "\n")
                    log.flush()
                acc.wait_for_everyone()
        bar.close()
        if log is not None:
            log.close()
        acc.end_training()
        return {"step": step, "loss": loss, "checkpoint": str(checkpoint) if checkpoint else None}

    def train_step(self, stream, step: int) -> tuple[float, float, int]:
        """One optimizer step over gradient_accumulation_steps micro-batches; (mean loss, grad norm, epoch)."""
        cfg, acc = self.config.train, self.accelerator
        losses, grad_norm = [], float("nan")
        for micro in range(cfg.gradient_accumulation_steps):
            epoch, batch = next(stream)
            slot = micro_slot(micro, acc.process_index, acc.num_processes)
            generator = micro_generator(acc.device, cfg.seed, step, slot)
            with acc.accumulate(self.loss_module):
                loss = self.loss_module(batch, generator=generator)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    grad_norm = float(acc.clip_grad_norm_(list(self.named_trainable.values()), cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        if not acc.sync_gradients:
            raise RuntimeError("internal: the last micro-batch of a step did not synchronise gradients")
        self.scheduler.step()
        mean = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
        if not math.isfinite(mean):
            raise FloatingPointError(f"the loss is {mean} at step {step + 1}: lower train.learning_rate, raise "
                                     "train.warmup_steps, or use bf16 instead of fp16")
        return mean, grad_norm, epoch


def train(config: ExperimentConfig, resume: str | None = None, family: TrainingFamily | None = None) -> dict:
    """Build a Trainer and run it; returns {"step", "loss", "checkpoint"} of the last step."""
    return Trainer(config, resume, family).fit()
