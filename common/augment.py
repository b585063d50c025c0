"""Differentiable augmentation of everything the discriminator sees (DiffAugment, Zhao et al., NeurIPS 2020).

The same random transformations are applied to the real and the fake batch in D's step and to the
fakes in G's step, so D cannot memorise a small set of real images, while G's gradient passes
through them and the samples themselves stay unaugmented. A policy names the transformations,
applied in this order:

- color: a random brightness shift (+-0.5), saturation (x0-2) and contrast (x0.5-1.5) per image;
  saturation does nothing to a one-channel image;
- translation: a random shift of up to 1/8 of the side in each direction, the uncovered border
  zero-filled (0 is mid-grey in the [-1, 1] range the GANs train in);
- cutout: a zero-filled square of half the side at a random place.

    augment = policy("translation,cutout")   # None for "": nothing is augmented
    logits = discriminator(augment(images))

Every random number is drawn on the images' device and every transformation is elementwise or a
gather, so no step waits for the host; dtype and memory layout (channels_last) are kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from common.config import fail

TRANSLATION = 1 / 8  # the largest shift, as a fraction of the side
CUTOUT = 1 / 2  # the side of the cut-out square, as a fraction of the image's side


def _per_image(x: torch.Tensor) -> torch.Tensor:
    """One uniform [0, 1) number per image, shaped to broadcast over [B, C, H, W], in x's dtype."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation and contrast, each drawn per image."""
    x = x + (_per_image(x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_per_image(x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_image(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = TRANSLATION) -> torch.Tensor:
    """Each image shifted by up to `ratio` of its side in each direction; the uncovered border is 0."""
    b, c, h, w = x.shape
    reach_y, reach_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-reach_y, reach_y + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-reach_x, reach_x + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # where each output pixel comes from
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # [B, 1, H, W]
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    moved = x.reshape(b, c, h * w).gather(2, source).view(b, c, h, w)
    return moved * inside.to(x.dtype)


def cutout(x: torch.Tensor, ratio: float = CUTOUT) -> torch.Tensor:
    """Each image with a zero square of `ratio` of its side, centred anywhere (it may cross the edge)."""
    b, _, h, w = x.shape
    side_y, side_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), device=x.device) - side_y // 2
    left = torch.randint(0, w, (b, 1, 1), device=x.device) - side_x // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cut = (rows >= top) & (rows < top + side_y) & (cols >= left) & (cols < left + side_x)
    return x * (~cut).unsqueeze(1).to(x.dtype)


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


Augment = Callable[[torch.Tensor], torch.Tensor]  # what policy() returns: D's input transformations


def policy(spec: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The augmentation a policy such as "translation,cutout" names, or None for "" (exits on an unknown name)."""
    names = [name.strip().lower() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown:
        fail(f"--augment: unknown transformation {unknown[0]!r}; use a comma list of {', '.join(TRANSFORMS)}, or ''")
    if not names:
        return None
    chosen = [TRANSFORMS[name] for name in TRANSFORMS if name in names]  # always in the documented order

    def augment(x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else None
        for transform in chosen:
            x = transform(x)
        return x.contiguous(memory_format=layout) if layout is not None else x

    augment.names = tuple(TRANSFORMS[name].__name__ for name in TRANSFORMS if name in names)  # type: ignore[attr-defined]
    return augment
