"""The usual Inception FID (CelebA), when torch-fidelity and its Inception weights can be had."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from common.evaluation import LOCAL, evaluation_device


def _inception(weights_path: str) -> nn.Module:
    """torch-fidelity's Inception-v3 (2048-d pool features) as wrapped by torchmetrics; raises if unavailable."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path or None
    )
    net.num_features = 2048
    return net


def inception_fid(
    real_uint8: torch.Tensor,
    fake_uint8: torch.Tensor | Callable[[], torch.Tensor],
    weights_path: str = "",
    device: torch.device | str = "cpu",
) -> tuple[float | None, str]:
    """The usual Inception FID of uint8 images [N, C, H, W], or (None, why it was skipped) when no weights can be had.

    `fake_uint8` may be a function that draws the images: it is called only once the network is
    loaded, so a run without the weights does not spend minutes generating images for nothing.
    """
    if weights_path and not Path(weights_path).is_file():
        return None, f"Inception FID skipped: the weights file {weights_path} does not exist"
    try:
        feature = _inception(weights_path)
    except ModuleNotFoundError:
        return None, "Inception FID skipped: torch-fidelity is not installed (pip install torch-fidelity)"
    except Exception as exc:  # offline download, bad file: the run goes on without this number
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (
            None,
            f"Inception FID skipped: no Inception weights ({reason[:120]}); set INCEPTION_WEIGHTS to a local file",
        )
    from torchmetrics.image.fid import FrechetInceptionDistance

    if callable(fake_uint8):
        fake_uint8 = fake_uint8()
    device = evaluation_device(device)
    fid = FrechetInceptionDistance(feature=feature, normalize=False, **LOCAL).to(device)
    for images, real in ((real_uint8, True), (fake_uint8, False)):
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # Inception wants RGB
        for i in range(0, len(images), 100):
            fid.update(images[i : i + 100].to(device), real=real)
    value = fid.compute().item()
    return value, f"Inception FID {value:.2f} ({len(real_uint8)} real, {len(fake_uint8)} generated images)"
