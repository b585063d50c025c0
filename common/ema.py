"""Exponential moving averages of models' weights (Polyak averaging), kept on the device.

    averages = ema.Averages()
    sampler = averages.add("generator_ema", "generator", generator, 0.999)  # sample from it
    ...after every training step: averages.update(t)                         # t steps since the start

An average is a copy of the model that is never trained: after each step its weights move a
fraction 1 - min(decay, (1 + t) / (10 + t)) towards the model's (a warm-up, so the random initial
weights fade fast in short runs), with one fused kernel over all parameters and no host sync.
Buffers (BatchNorm's running statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Average:
    name: str  # its name in checkpoints
    base: str  # the name of the model it averages
    average: nn.Module
    model: nn.Module
    decay: float


class Averages:
    """The run's moving averages, updated together after every step."""

    def __init__(self) -> None:
        self.entries: list[Average] = []

    def add(self, name: str, base: str, model: nn.Module, decay: float) -> nn.Module:
        """A new average of `model` (saved as `name`, averaging `base`), starting from its weights."""
        average = copy.deepcopy(model).requires_grad_(False)
        self.entries.append(Average(name, base, average, model, decay))
        return average

    @torch.no_grad()
    def update(self, t: int) -> None:
        """One averaging step of every average, t training steps after the run's start (resumes agree)."""
        for entry in self.entries:
            weight = 1 - min(entry.decay, (1 + t) / (10 + t))
            torch._foreach_lerp_(list(entry.average.parameters()), list(entry.model.parameters()), weight)
            for mine, theirs in zip(entry.average.buffers(), entry.model.buffers(), strict=True):
                mine.copy_(theirs)

    def fill_missing(self, saved_models: dict[str, dict]) -> None:
        """A checkpoint from before an average existed: the average starts from its base model's weights."""
        for entry in self.entries:
            if entry.name not in saved_models:
                print(f"note: the checkpoint has no {entry.name}; it starts from {entry.base}'s weights")
                saved_models[entry.name] = saved_models[entry.base]
