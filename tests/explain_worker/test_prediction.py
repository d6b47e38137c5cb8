"""Tests for explain_worker.prediction.predict_batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from explain_worker.prediction import PredictionBatch, predict_batch


def tiny_classifier() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).eval()


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def assert_consistent(result: PredictionBatch, logits: torch.Tensor) -> None:
    n, c = logits.shape
    assert result.probabilities.shape == (n, c)
    assert result.probabilities.dtype == np.float32
    assert result.label_indices.dtype == np.int64
    assert result.confidences.dtype == np.float32
    assert result.embeddings.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        result.probabilities, torch.softmax(logits, dim=1).numpy(), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_array_equal(result.label_indices, logits.argmax(dim=1).numpy())
    np.testing.assert_array_equal(
        result.confidences, result.probabilities[np.arange(n), result.label_indices]
    )


def test_probabilities_labels_and_penultimate_embedding(batch: torch.Tensor) -> None:
    model = tiny_classifier()
    result = predict_batch(model, batch)
    with torch.no_grad():
        logits = model(batch)
        penultimate = model[:-1](batch)  # everything before the last Linear
    assert_consistent(result, logits)
    assert result.embeddings.shape == (5, 6)
    np.testing.assert_allclose(result.embeddings, penultimate.numpy(), rtol=1e-6)


def test_hook_is_removed_after_prediction(batch: torch.Tensor) -> None:
    model = tiny_classifier()
    predict_batch(model, batch)
    assert not model[-1]._forward_pre_hooks


def test_torchvision_embedding_is_penultimate_layer(batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=4).eval()
    result = predict_batch(model, batch)
    # Without the final Linear the network outputs exactly what that layer used to receive.
    model.classifier[-1] = nn.Identity()
    with torch.no_grad():
        penultimate = model(batch)
    assert result.embeddings.shape == (5, 1024)
    np.testing.assert_allclose(result.embeddings, penultimate.numpy(), rtol=1e-5, atol=1e-6)


def test_script_module_falls_back_to_logits(batch: torch.Tensor) -> None:
    model = tiny_classifier()
    scripted = torch.jit.script(model)
    result = predict_batch(scripted, batch)
    with torch.no_grad():
        logits = model(batch)
    assert_consistent(result, logits)
    np.testing.assert_allclose(result.embeddings, logits.numpy(), rtol=1e-6)


def test_model_without_linear_falls_back_to_logits(batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, kernel_size=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    result = predict_batch(model.eval(), batch)
    with torch.no_grad():
        logits = model(batch)
    assert_consistent(result, logits)
    np.testing.assert_allclose(result.embeddings, logits.numpy(), rtol=1e-6)


def test_non_classifier_output_is_rejected(batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="expected logits"):
        predict_batch(nn.Identity(), batch)


def test_rooms_cnn_embedding_is_linear_input() -> None:
    rooms_cnn = pytest.importorskip("explain_worker.rooms_cnn")
    torch.manual_seed(0)
    model = rooms_cnn.RoomsCNN(num_classes=5).eval()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    result = predict_batch(model, torch.randn(2, 3, 64, 64))
    assert result.embeddings.shape == (2, head.in_features)
    assert result.probabilities.shape == (2, 5)
