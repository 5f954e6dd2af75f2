"""Where every random number of a training run comes from.

The rule that makes resume exact and data parallelism equivalent to accumulation:

- Data: the items of optimizer step s are a pure function of (seed, epoch): the sampler draws one
  epoch of `batches_per_epoch x processes x batch_size` indices and micro-batch m of step s on
  process r is row (s * accumulation + m, r) of it (onehead.training.data.EpochBatchSampler).
- Noise: micro-batch m of step s on process r draws every noise sample and timestep from
  `micro_generator(seed, step=s, slot=m * processes + r)`: its *global* micro-batch slot, the
  same slot numbering as the data above.

So two runs with the same seed and batch_size and the same processes x accumulation (e.g. 2
processes x accumulation 1 and 1 process x accumulation 2, global batch 2 x batch_size) give every
micro-batch the same items and the same noise, and compute the same update up to float rounding
(DDP averages the processes' gradients, accumulation averages the micro-batches'). A micro-batch
draws its noise as one block, so splitting it differently (1 process x batch 2 vs 2 x batch 1)
sees the same items with different noise. With one process the slot is the micro-batch index,
which keeps single-process runs identical to those of earlier onehead versions.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def mix_seed(*numbers: int) -> int:
    """One 63-bit seed from several integers (independent streams for (seed, step, ...))."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, np.uint64)[0] >> 1)


def micro_slot(micro: int, rank: int, world_size: int) -> int:
    """The global slot of micro-batch `micro` on process `rank` within one optimizer step."""
    return micro * world_size + rank


def micro_generator(device, seed: int, step: int, slot: int) -> torch.Generator:
    """The noise and timestep generator of one micro-batch: a pure function of (seed, step, slot)."""
    return torch.Generator(device=device).manual_seed(mix_seed(seed, step, slot, 0, 2))


def seed_globals(seed: int, rank: int) -> None:
    """Seed python, numpy and torch's global RNGs for process `rank` (a fresh, not resumed, run)."""
    value = mix_seed(seed, rank)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
