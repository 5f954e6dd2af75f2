"""Training data: weighted sources, a deterministic sharded batch sampler, an endless stream."""

from __future__ import annotations

from typing import Callable

import torch

from onehead.training.seeding import mix_seed


class MixedDataset(torch.utils.data.ConcatDataset):
    """The configured sources back to back; `weights` are their sampling shares (any scale)."""

    def __init__(self, datasets, weights):
        super().__init__(datasets)
        self.sizes = [len(ds) for ds in datasets]
        self.weights = list(weights)

    def set_epoch(self, epoch: int) -> None:
        for ds in self.datasets:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)


def mixed_dataset(sources, open_source: Callable[[int, object], object]) -> MixedDataset:
    """A MixedDataset of every source with weight > 0; open_source(index, source) opens one."""
    opened = [(open_source(i, s), s.weight) for i, s in enumerate(sources) if s.weight > 0]
    return MixedDataset([d for d, _ in opened], [w for _, w in opened])


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
        dataset.set_epoch(epoch)  # e.g. the reference-frame draws of ReenactmentDataset
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=default_collate, num_workers=num_workers,
                            pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 1)))
        for batch in loader:
            yield epoch, send_to_device(batch, device, non_blocking=True)
        epoch, skip = epoch + 1, 0


def spread_batch(dataset, count: int) -> dict:
    """`count` items spread evenly over `dataset`, collated (the validation batch)."""
    import numpy as np
    from torch.utils.data import default_collate

    indices = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return default_collate([dataset[int(i)] for i in indices])
