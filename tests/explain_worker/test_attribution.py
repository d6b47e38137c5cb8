"""Tests for explain_worker.attribution: shapes, value sanity per method, layers and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from explain_worker.attribution import (
    METHODS,
    AttributionConfig,
    AttributionConfigError,
    attribute_batch,
    canonical_method,
    default_gradcam_layer,
    layer_names,
    map_stats,
    normalise_for_display,
    predicted_targets,
    prepare_for_attribution,
    validate_config,
)
from explain_worker.model_loading import ModelSpec, load_model, preprocess
from explain_worker.rooms_cnn import ROOMS_INPUT_SIZE, ROOMS_MEAN, ROOMS_STD, RoomsCNN

SIZE = 16
PIXEL = (5, 7)


def frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return frozen(
        nn.Sequential(
            nn.Conv2d(3, 6, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Sequential(nn.Conv2d(6, 8, kernel_size=3, stride=2, padding=1), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 3),
        )
    )


class OnePixelModel(nn.Module):
    """Logits depend on input pixel PIXEL only, linearly: every method must point there."""

    def __init__(self) -> None:
        super().__init__()
        weights = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 1.0]])  # (channels, classes)
        self.register_buffer("weights", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, PIXEL[0], PIXEL[1]] @ self.weights


class RegionModel(nn.Module):
    """A strided conv that only sees bright red, so its feature map lights up where red is."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, kernel_size=2, stride=2), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[:, 0] = 1.0  # red channel only
            self.features[0].bias.fill_(-0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 0.0]]))
            self.head.bias.zero_()
        frozen(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def inputs() -> torch.Tensor:
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_one_float32_map_per_input(inputs: torch.Tensor, method: str) -> None:
    model = tiny_cnn()
    targets = predicted_targets(model, inputs)
    maps = attribute_batch(model, inputs, targets, AttributionConfig(method, n_steps=4, window=4))
    assert maps.shape == (4, SIZE, SIZE)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert np.abs(maps).sum() > 0


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_gradient_methods_put_all_mass_on_the_only_pixel_read(
    inputs: torch.Tensor, method: str
) -> None:
    targets = torch.tensor([0, 1, 0, 1])
    maps = attribute_batch(OnePixelModel(), inputs, targets, AttributionConfig(method, n_steps=8))
    magnitude = np.abs(maps)
    at_pixel = magnitude[:, PIXEL[0], PIXEL[1]]
    assert (at_pixel > 0).all()
    np.testing.assert_allclose(magnitude.sum(axis=(1, 2)), at_pixel, rtol=1e-6)


def test_integrated_gradients_is_complete_on_a_linear_model(inputs: torch.Tensor) -> None:
    model = OnePixelModel()
    targets = torch.tensor([0, 1, 1, 0])
    maps = attribute_batch(model, inputs, targets, AttributionConfig("ig", n_steps=4))
    logits = model(inputs)
    expected = logits[torch.arange(4), targets] - model(torch.zeros_like(inputs))[0, targets]
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_integrated_gradients_does_not_depend_on_the_internal_batch(inputs: torch.Tensor) -> None:
    model = tiny_cnn()
    targets = predicted_targets(model, inputs)
    whole = attribute_batch(model, inputs, targets, AttributionConfig("ig", n_steps=6))
    # 3 < 4 images: the images are split into chunks instead of Captum widening the batch.
    for internal in (3, 8):
        config = AttributionConfig("ig", n_steps=6, internal_batch_size=internal)
        np.testing.assert_allclose(
            attribute_batch(model, inputs, targets, config), whole, rtol=1e-4, atol=1e-7
        )


def test_occlusion_is_nonzero_over_the_pixel_and_zero_far_away(inputs: torch.Tensor) -> None:
    targets = torch.tensor([0, 1, 0, 1])
    config = AttributionConfig("occlusion", window=3, stride=1)
    maps = attribute_batch(OnePixelModel(), inputs, targets, config)
    assert (maps[:, PIXEL[0], PIXEL[1]] != 0).all()
    assert (maps[:, 0, 0] == 0).all()
    assert (maps[:, SIZE - 1, SIZE - 1] == 0).all()
    # Only windows that cover the pixel change the output.
    assert (maps[:, PIXEL[0] + 3 :, :] == 0).all()


def test_gradcam_peaks_where_the_features_respond() -> None:
    images = torch.zeros(2, 3, SIZE, SIZE)
    images[0, 0, 2:6, 2:6] = 1.0  # red square top left
    images[1, 0, 10:14, 8:12] = 1.0  # red square bottom middle
    maps = attribute_batch(
        RegionModel(), images, torch.tensor([0, 0]), AttributionConfig("gradcam")
    )
    assert maps.shape == (2, SIZE, SIZE)
    assert (maps >= 0).all()
    for index, (rows, cols) in enumerate(
        [(slice(2, 6), slice(2, 6)), (slice(10, 14), slice(8, 12))]
    ):
        peak = np.unravel_index(maps[index].argmax(), maps[index].shape)
        assert rows.start - 1 <= peak[0] < rows.stop + 1
        assert cols.start - 1 <= peak[1] < cols.stop + 1
        inside = maps[index][rows, cols].mean()
        outside = maps[index].sum() - maps[index][rows, cols].sum()
        assert inside > 0
        assert outside / (maps[index].size - 16) < 0.25 * inside


def test_default_gradcam_layers() -> None:
    assert default_gradcam_layer(torchvision.models.resnet18(num_classes=5)) == "layer4.1"
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=5)
    assert default_gradcam_layer(mobilenet) == "features.12"
    assert default_gradcam_layer(RoomsCNN()) == "features.block4"
    # A conv that hangs off the root directly is its own block.
    assert default_gradcam_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) == "0"


def test_layer_names_are_convs_and_the_modules_holding_them() -> None:
    assert layer_names(tiny_cnn()) == ["0", "2", "2.0"]
    names = layer_names(torchvision.models.resnet18(num_classes=5))
    assert {"layer3", "layer4", "layer4.1", "layer4.1.conv2", "conv1"} <= set(names)
    assert "fc" not in names
    assert "" not in names


def test_custom_gradcam_layer_is_honoured() -> None:
    model = frozen(torchvision.models.resnet18(num_classes=5))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = predicted_targets(model, images)
    default = attribute_batch(model, images, targets, AttributionConfig("gradcam"))
    layer3 = attribute_batch(model, images, targets, AttributionConfig("gradcam", layer="layer3"))
    assert default.shape == layer3.shape == (2, 64, 64)
    assert not np.allclose(default, layer3)


def test_targets_change_the_maps(inputs: torch.Tensor) -> None:
    model = tiny_cnn()
    config = AttributionConfig("saliency")
    class0 = attribute_batch(model, inputs, torch.zeros(4, dtype=torch.long), config)
    class1 = attribute_batch(model, inputs, torch.ones(4, dtype=torch.long), config)
    assert not np.allclose(class0, class1)


def test_batched_maps_equal_one_image_at_a_time(inputs: torch.Tensor) -> None:
    model = tiny_cnn()
    targets = predicted_targets(model, inputs)
    for method in METHODS:
        config = AttributionConfig(method, n_steps=4, window=4)
        batched = attribute_batch(model, inputs, targets, config)
        single = np.concatenate(
            [
                attribute_batch(model, inputs[i : i + 1], targets[i : i + 1], config)
                for i in range(4)
            ]
        )
        np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6, err_msg=method)


def test_loaded_model_with_predicted_targets_goes_through_every_method(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "rooms.pt"
    torch.save(RoomsCNN().state_dict(), weights)
    spec = ModelSpec(
        kind="architecture",
        weights_path=str(weights),
        num_classes=5,
        input_size=ROOMS_INPUT_SIZE,
        mean=ROOMS_MEAN,
        std=ROOMS_STD,
        architecture="rooms_cnn",
    )
    model = load_model(spec)
    images = [Image.new("RGB", (80, 60), colour) for colour in ("red", "teal")]
    batch = preprocess(images, input_size=spec.input_size, mean=spec.mean, std=spec.std)
    targets = predicted_targets(model, batch)
    assert targets.dtype == torch.long
    assert not targets.is_inference()
    for method in METHODS:
        maps = attribute_batch(model, batch, targets, AttributionConfig(method, n_steps=4))
        assert maps.shape == (2, ROOMS_INPUT_SIZE, ROOMS_INPUT_SIZE)
    # Attribution must not have unfrozen the cached model.
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_inference_mode_tensors_are_accepted(inputs: torch.Tensor) -> None:
    model = tiny_cnn()
    with torch.inference_mode():
        batch = inputs.clone()
        targets = model(batch).argmax(dim=1)
    maps = attribute_batch(model, batch, targets, AttributionConfig("saliency"))
    assert maps.shape == (4, SIZE, SIZE)


def test_aliases_and_params() -> None:
    assert canonical_method("IG") == "integrated_gradients"
    assert canonical_method("grad_cam") == "gradcam"
    assert canonical_method("layer_gradcam") == "gradcam"
    assert AttributionConfig("Grad-CAM", layer="layer3").params() == {
        "method": "gradcam",
        "layer": "layer3",
        "relu": True,
        "upsample": "bilinear",
    }
    ig = AttributionConfig("ig", n_steps=16).params()
    assert ig["n_steps"] == 16
    assert "window" not in ig
    assert AttributionConfig("saliency", window=5).params() == {"method": "saliency"}
    for method in METHODS:
        json.dumps(AttributionConfig(method).params())
    assert AttributionConfig("ig").signed
    assert not AttributionConfig("gradcam").signed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "lime"}, "method"),
        ({"method": "ig", "n_steps": 0}, "n_steps"),
        ({"method": "ig", "n_steps": 10_000}, "n_steps"),
        ({"method": "ig", "internal_batch_size": 0}, "internal_batch_size"),
        ({"method": "occlusion", "window": 0}, "window"),
        ({"method": "occlusion", "window": 4, "stride": 6}, "stride"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(AttributionConfigError) as caught:
        AttributionConfig(**kwargs)
    assert caught.value.field == field
    assert caught.value.message


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(AttributionConfigError, match="saliency, integrated_gradients"):
        canonical_method("lime")


def test_unknown_layer_is_reported_with_the_available_ones(inputs: torch.Tensor) -> None:
    model = tiny_cnn()
    config = AttributionConfig("gradcam", layer="layer9")
    with pytest.raises(AttributionConfigError) as caught:
        validate_config(model, config)
    assert caught.value.field == "layer"
    assert "'layer9'" in caught.value.message
    assert "2.0" in caught.value.message
    with pytest.raises(AttributionConfigError):
        attribute_batch(model, inputs, torch.zeros(4, dtype=torch.long), config)


def test_occlusion_window_larger_than_the_input_is_rejected(inputs: torch.Tensor) -> None:
    config = AttributionConfig("occlusion", window=SIZE + 1, stride=4)
    with pytest.raises(AttributionConfigError) as caught:
        attribute_batch(tiny_cnn(), inputs, torch.zeros(4, dtype=torch.long), config)
    assert caught.value.field == "window"


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_gradcam_is_refused_for_torchscript_models() -> None:
    scripted = torch.jit.trace(tiny_cnn(), torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(AttributionConfigError) as caught:
        validate_config(scripted, AttributionConfig("gradcam"))
    assert caught.value.field == "method"
    validate_config(scripted, AttributionConfig("saliency"))


def test_normalise_for_display_and_stats() -> None:
    unsigned = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(normalise_for_display(unsigned), unsigned / 4)
    signed = np.array([[-2.0, 1.0], [0.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(normalise_for_display(signed), signed / 2)
    assert not normalise_for_display(np.zeros((2, 2))).any()
    assert map_stats(signed) == {"min": -2.0, "max": 1.0, "mean_abs": 0.875}


def resnet_with_real_norms() -> nn.Module:
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=5)
    # Fresh norms are identities; real statistics make folding them observable.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return frozen(model)


def test_optimised_maps_equal_the_plain_ones() -> None:
    model = resnet_with_real_norms()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    targets = predicted_targets(model, images)
    for config in (
        AttributionConfig("saliency"),
        AttributionConfig("gradcam"),
        AttributionConfig("gradcam", layer="layer4.1.conv2"),
    ):
        fast = attribute_batch(model, images, targets, config)
        plain = attribute_batch(model, images, targets, config, optimise=False)
        np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5 * np.abs(plain).max())


def test_prepared_copy_folds_norms_and_leaves_the_model_alone() -> None:
    model = resnet_with_real_norms()
    weight = model.conv1.weight.clone()
    prepared = prepare_for_attribution(model)
    assert prepared is not model
    assert prepare_for_attribution(model) is prepared  # cached
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert prepared.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in prepared.parameters())
    # The model itself, which the model cache also hands to prediction, is unchanged.
    assert isinstance(model.bn1, nn.BatchNorm2d)
    assert torch.equal(model.conv1.weight, weight)
    assert model.conv1.weight.is_contiguous()
    # An attributed convolution keeps its own output: its norm is not folded into it.
    kept = prepare_for_attribution(model, keep="layer4.1.conv2")
    assert isinstance(kept.get_submodule("layer4.1.bn2"), nn.BatchNorm2d)
    assert isinstance(kept.get_submodule("layer4.1.bn1"), nn.Identity)


def test_models_with_hooks_or_in_training_are_not_copied() -> None:
    model = tiny_cnn()
    handle = model[0].register_forward_hook(lambda *_: None)
    assert prepare_for_attribution(model) is model
    handle.remove()
    assert prepare_for_attribution(model.train()) is model
