"""Batched inference: class probabilities plus an embedding per image, in one forward pass."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions for N images over C classes.

    ``embeddings`` has D columns, D depending on the model (see :func:`predict_batch`).
    """

    probabilities: np.ndarray  # (N, C) float32, softmax of the logits
    label_indices: np.ndarray  # (N,) int64, argmax of the probabilities
    confidences: np.ndarray  # (N,) float32, the largest probability
    embeddings: np.ndarray  # (N, D) float32


def predict_batch(model: nn.Module, batch: torch.Tensor) -> PredictionBatch:
    """Classify a preprocessed NCHW ``batch`` and capture an embedding for each image.

    The embedding is the input of the last ``nn.Linear`` in ``model.modules()`` order, flattened
    per image: the penultimate activations of torchvision classifiers and RoomsCNN. It falls back
    to the logits themselves (D == C) when no such layer can be observed: for TorchScript models
    (Python hooks do not run inside scripted code), for models without an ``nn.Linear`` (e.g.
    SqueezeNet's convolutional head), or when that layer does not see one row per image.

    The model is used as given; callers pass models from ``load_model``, already in eval mode.
    The batch is moved to the model's device.
    """
    device = _model_device(model)
    if device is not None:
        batch = batch.to(device)
    captured: list[torch.Tensor] = []
    caller = threading.get_ident()

    def capture(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # A cached model may serve several threads at once; keep only this call's activations.
        if threading.get_ident() == caller:
            captured.append(args[0])

    head = None if isinstance(model, torch.jit.ScriptModule) else _last_linear(model)
    handle = head.register_forward_pre_hook(capture) if head is not None else None
    try:
        with torch.inference_mode():
            logits = model(batch)
    finally:
        if handle is not None:
            handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != len(batch):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"expected logits of shape ({len(batch)}, C), got {shape}")

    logits = logits.float()
    probabilities = torch.softmax(logits, dim=1)
    confidences, label_indices = probabilities.max(dim=1)
    # The last call wins in case the head runs more than once; its batch size must still match.
    features = captured[-1] if captured else None
    if features is None or features.ndim < 2 or features.shape[0] != logits.shape[0]:
        features = logits
    return PredictionBatch(
        probabilities=probabilities.cpu().numpy().astype(np.float32, copy=False),
        label_indices=label_indices.cpu().numpy().astype(np.int64, copy=False),
        confidences=confidences.cpu().numpy().astype(np.float32, copy=False),
        embeddings=features.flatten(1).float().cpu().numpy().astype(np.float32, copy=False),
    )


def _last_linear(model: nn.Module) -> nn.Linear | None:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last


def _model_device(model: nn.Module) -> torch.device | None:
    # Parameter-free models (rare, but valid) give no device; the batch is then left alone.
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None
