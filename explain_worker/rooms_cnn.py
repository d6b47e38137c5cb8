"""A small CNN for the synthetic rooms scenes, and a deterministic CPU training loop for it.

The demo can train this model on a CPU-only worker, so it must learn the rooms data in well
under a minute on two cores. It keeps the shape explanation methods expect: convolution
blocks under ``features`` (Grad-CAM hooks the last one), global average pooling, and a single
``nn.Linear`` as the last module, whose input is the embedding the product stores.
This module must stay free of Django.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

ROOMS_INPUT_SIZE = 64
# Per-channel statistics of the default rooms train split (seed 0), rounded; inference must
# normalise with exactly these values, so they are constants rather than computed per run.
ROOMS_MEAN: tuple[float, float, float] = (0.6800, 0.6516, 0.6124)
ROOMS_STD: tuple[float, float, float] = (0.1639, 0.1903, 0.2135)

_WIDTHS = (24, 48, 64, 128)


def _conv_block(
    in_channels: int, out_channels: int, *, pool: bool, stride: int = 1
) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
    layers: list[tuple[str, nn.Module]] = [
        ("conv", conv),
        ("bn", nn.BatchNorm2d(out_channels)),
        ("relu", nn.ReLU(inplace=False)),
    ]
    if pool:
        layers.append(("pool", nn.MaxPool2d(2)))
    return nn.Sequential(OrderedDict(layers))


class RoomsCNN(nn.Module):
    """Four conv blocks (64 -> 32 -> 16 -> 8 px), global average pool, one linear layer.

    ReLUs are not in-place so that backward hooks (Grad-CAM, guided methods) see intact
    activations.
    """

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        c1, c2, c3, c4 = _WIDTHS
        self.features = nn.Sequential(
            OrderedDict(
                [
                    # Strided convolutions instead of conv + max-pool at 64 and 32 px: the
                    # glyphs survive them, and CPU training gets about three times cheaper.
                    ("block1", _conv_block(3, c1, pool=False, stride=2)),
                    ("block2", _conv_block(c1, c2, pool=False, stride=2)),
                    ("block3", _conv_block(c2, c3, pool=True)),
                    # No pooling here: Grad-CAM on this block keeps an 8x8 map at 64 px input.
                    ("block4", _conv_block(c3, c4, pool=False)),
                ]
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c4, num_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolution block, whose output Grad-CAM should attribute to."""
        return self.features[-1]

    @property
    def embedding_size(self) -> int:
        return self.classifier.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, embedding_size): the input of ``classifier``."""
        return self.flatten(self.pool(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def rooms_preprocess(images: np.ndarray) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` RGB to normalised ``float32 (N, 3, H, W)``; no resizing.

    Training uses exactly this, so inference on a trained RoomsCNN must use it too.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(ROOMS_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(ROOMS_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def train_rooms_cnn(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int = 5,
    epochs: int = 8,
    seed: int = 0,
    threads: int | None = None,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
) -> tuple[RoomsCNN, dict[str, float]]:
    """Train a fresh RoomsCNN on ``images`` (uint8 N,H,W,3) and ``labels`` (int64 N).

    Deterministic for a given seed and thread count (float sums in convolutions depend on how
    work is split across threads). ``threads`` sets torch's intra-op threads for the duration of
    the call only. Returns the model in eval mode and metrics: ``train_accuracy`` (eval mode, on
    the recorded labels), ``final_loss``, ``seconds``, ``epochs``, ``num_images``.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError("need as many labels as images, and at least one image")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(images, labels, num_classes, epochs, seed, batch_size, learning_rate)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    epochs: int,
    seed: int,
    batch_size: int,
    learning_rate: float,
) -> tuple[RoomsCNN, dict[str, float]]:
    started = time.perf_counter()
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    x = rooms_preprocess(images)
    y = torch.as_tensor(labels, dtype=torch.int64)
    model = RoomsCNN(num_classes=num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(1, epochs * steps_per_epoch)
    )
    loss_fn = nn.CrossEntropyLoss()
    final_loss = float("nan")
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=order_generator)
        running, seen = 0.0, 0
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            # A batch of one breaks BatchNorm's batch statistics; it only drops a leftover image.
            if len(batch) < 2:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach()) * len(batch)
            seen += len(batch)
        final_loss = running / max(1, seen)
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    metrics: dict[str, float] = {
        "train_accuracy": float((predicted == y).float().mean()),
        "final_loss": final_loss,
        "seconds": time.perf_counter() - started,
        "epochs": epochs,
        "num_images": len(x),
    }
    return model, metrics
