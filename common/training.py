"""What every model's training step and every evaluation share: one optimizer update, the models in eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on a loss (backward and step outside autocast, as PyTorch advises)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@contextlib.contextmanager
def eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    """The models in eval mode and without gradients inside (grids, metrics); back in train mode after."""
    for model in models:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for model in models:
            model.train()
