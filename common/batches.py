"""A split of a data set and the equal-size shuffled batches drawn by index from it, resumable mid-epoch.

A Split (uint8 images and their labels) is what common/data.py and common/celeba.py load; it lives
here so that this module needs nothing above it. Every batch has the same size, the shuffle of an epoch depends only on (seed, epoch), so a resumed
run draws the batches an uninterrupted one would, and under torchrun each rank takes a disjoint
shard of it. A split held on the GPU is indexed there; one in host memory is copied over batch by
batch from pinned memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from common.config import fail


@dataclass
class Split:
    """One split of a data set: uint8 images [N, C, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        """The same split on another device."""
        return Split(self.images.to(device), self.labels.to(device))


class Batches:
    """Shuffled batches of one size, drawn by index from a split; each sample at most once per epoch.

    Every batch holds exactly `batch_size` samples, so shapes never change (what torch.compile and
    CUDA graphs need): the `n mod batch_size` samples left over by an epoch's shuffle sit that
    epoch out. The shuffle is new every epoch, so every sample is equally likely to be left over
    and, over epochs, is trained on as often as any other. The permutation of epoch `e` depends
    only on (seed, e), so a resumed run draws exactly the batches an uninterrupted one would. With
    `world_size` > 1 each rank takes a disjoint shard of the same permutation (equal lengths, so
    every rank runs the same number of steps).
    """

    def __init__(self, split: Split, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shard_size = len(split) // world_size
        if self.shard_size == 0:
            fail(f"the data set has {len(split)} images, fewer than the {world_size} processes")
        if batch_size > self.shard_size:
            fail(f"--batch_size={batch_size} is larger than the {self.shard_size} training images per process")

    def __len__(self) -> int:
        return self.shard_size // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's shuffled sample indices for an epoch, whole batches only: [len(self) * batch_size], on the CPU."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.split), generator=gen)
        shard = perm[self.rank * self.shard_size : (self.rank + 1) * self.shard_size]
        return shard[: len(self) * self.batch_size]

    def indices(self, epoch: int) -> list[torch.Tensor]:
        """This rank's batches of sample indices for an epoch."""
        return list(self.order(epoch).split(self.batch_size))

    def epoch(
        self, epoch: int, device: torch.device | None = None, skip: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 images, labels) batches for one epoch after its first `skip`, on `device` (default: the split's).

        A split on the GPU is indexed there: the epoch's order is copied over once, and no batch
        waits on the host. A split in host memory (a CelebA cache too large for the GPU) is indexed
        on the host and each batch copied from pinned memory without blocking.
        """
        source = self.split.images.device
        order = self.order(epoch)[skip * self.batch_size :]
        if source.type == "cuda":
            order = order.pin_memory().to(source, non_blocking=True)
        elif source.type != "cpu":
            order = order.to(source)
        for idx in order.split(self.batch_size):
            images, labels = self.split.images[idx], self.split.labels[idx]
            if device is not None and device != source:
                if source.type == "cpu" and device.type == "cuda":
                    # indexing returns unpinned memory even from a pinned split; pinning the batch
                    # (cached by torch's host allocator) lets the copy below overlap with compute
                    images, labels = images.pin_memory(), labels.pin_memory()
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            yield images, labels
