"""Tests for explain_worker.model_loading: safe loading, validation, preprocessing, caching."""

from __future__ import annotations

import pathlib
import pickle
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

from explain_worker import model_loading
from explain_worker.model_loading import (
    ModelCache,
    ModelLoadError,
    ModelSpec,
    build_architecture,
    configure_torch_threads,
    list_architectures,
    load_model,
    pick_device,
    preprocess,
    validate_model,
)

INPUT_SIZE = 32
NUM_CLASSES = 5
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class TinyNet(nn.Module):
    """Small enough to keep TorchScript tests fast; depends on a fixed input size on purpose."""

    def __init__(self, num_classes: int = NUM_CLASSES, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(4 * (input_size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class PickleBomb:
    """Creates a marker file if it is ever unpickled, proving that loading executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., None], tuple[pathlib.Path]]:
        return (pathlib.Path.touch, (self.marker,))


def architecture_spec(
    path: Path, architecture: str = "resnet18", num_classes: int = NUM_CLASSES
) -> ModelSpec:
    return ModelSpec(
        kind="architecture",
        weights_path=str(path),
        num_classes=num_classes,
        input_size=INPUT_SIZE,
        mean=MEAN,
        std=STD,
        architecture=architecture,
    )


def mobilenet_spec(path: Path, num_classes: int = NUM_CLASSES) -> ModelSpec:
    return architecture_spec(path, "mobilenet_v3_small", num_classes)


def torchscript_spec(path: Path, num_classes: int = NUM_CLASSES) -> ModelSpec:
    return ModelSpec(
        kind="torchscript",
        weights_path=str(path),
        num_classes=num_classes,
        input_size=INPUT_SIZE,
        mean=MEAN,
        std=STD,
    )


def sample_image(size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# mobilenet_v3_small builds and loads several times faster than resnet18, which keeps the many
# file-format tests cheap; resnet18 still gets one full round trip.
@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def mobilenet_weights(mobilenet: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mobilenet.pt"
    torch.save(mobilenet.state_dict(), path)
    return path


def assert_same_outputs(expected: nn.Module, loaded: nn.Module) -> None:
    batch = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), expected(batch))


def assert_same_weights(expected: nn.Module, loaded: nn.Module) -> None:
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded_state[key], value), key


def write_torchscript(path: Path, model: nn.Module) -> Path:
    torch.jit.script(model.eval()).save(str(path))
    return path


# --- architectures -------------------------------------------------------------------------


def test_list_architectures_has_classifiers_and_rooms_cnn() -> None:
    names = list_architectures()
    assert "resnet18" in names
    assert "rooms_cnn" in names
    assert "fasterrcnn_resnet50_fpn" not in names  # detection models are not classifiers
    assert names == sorted(names)


def test_build_architecture_sets_num_classes() -> None:
    model = build_architecture("mobilenet_v3_small", 3).eval()
    assert model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)).shape == (1, 3)


def test_build_architecture_unknown_name_explains_where_to_look() -> None:
    with pytest.raises(ModelLoadError, match="list_models") as info:
        build_architecture("resnet181", NUM_CLASSES)
    assert "'resnet18'" in str(info.value)  # close-match suggestion


def test_build_rooms_cnn_when_available() -> None:
    pytest.importorskip("explain_worker.rooms_cnn")
    model = build_architecture("rooms_cnn", 4)
    assert isinstance(model, nn.Module)


# --- state dicts -----------------------------------------------------------------------------


def test_state_dict_roundtrip_resnet18(tmp_path: Path) -> None:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), path)
    loaded = load_model(architecture_spec(path))
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert_same_outputs(resnet, loaded)


def test_data_parallel_prefix_is_stripped(mobilenet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in mobilenet.state_dict().items()}, path)
    assert_same_weights(mobilenet, load_model(mobilenet_spec(path)))


def test_checkpoint_with_state_dict_key(mobilenet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": mobilenet.state_dict(), "epoch": 7}, path)
    assert_same_weights(mobilenet, load_model(mobilenet_spec(path)))


def test_legacy_serialisation_format_loads(mobilenet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(mobilenet.state_dict(), path, _use_new_zipfile_serialization=False)
    assert_same_weights(mobilenet, load_model(mobilenet_spec(path)))


def test_whole_pickled_model_is_rejected(mobilenet: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(mobilenet, path)
    with pytest.raises(ModelLoadError, match="not a state dict") as info:
        load_model(architecture_spec(path))
    assert "model.state_dict()" in str(info.value)
    assert "weights_only=False" not in str(info.value)


def test_arbitrary_pickle_is_rejected_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(PickleBomb(marker)))
    with pytest.raises(ModelLoadError, match="not a state dict"):
        load_model(architecture_spec(path))
    assert not marker.exists()


def test_garbage_bytes_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a model file\n" * 40)
    with pytest.raises(ModelLoadError, match="could not be read as PyTorch weights"):
        load_model(architecture_spec(path))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(architecture_spec(tmp_path / "nope.pt"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([torch.zeros(1)], "holds a list"),
        ({"weight": torch.zeros(1), "epoch": 3}, "'epoch'"),
        ({}, "empty"),
    ],
)
def test_non_state_dict_contents_are_rejected(
    content: object, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(ModelLoadError, match=message):
        load_model(architecture_spec(path))


def test_wrong_architecture_keys_are_named(mobilenet_weights: Path) -> None:
    with pytest.raises(ModelLoadError, match="different architecture") as info:
        load_model(architecture_spec(mobilenet_weights, architecture="squeezenet1_1"))
    message = str(info.value)
    assert "missing features.0.weight" in message
    assert "unexpected features.0.0.weight" in message
    assert "more" in message  # long key lists are cut short


def test_wrong_class_count_shape_is_named(mobilenet_weights: Path) -> None:
    expected = re.escape("classifier.3.weight (file (5, 1024), expected (3, 1024))")
    with pytest.raises(ModelLoadError, match=expected):
        load_model(mobilenet_spec(mobilenet_weights, num_classes=3))


# --- TorchScript -----------------------------------------------------------------------------


def test_torchscript_roundtrip(tmp_path: Path) -> None:
    model = TinyNet().eval()
    path = write_torchscript(tmp_path / "tiny.pt", model)
    loaded = load_model(torchscript_spec(path))
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert_same_outputs(model, loaded)


def test_state_dict_file_is_not_torchscript(mobilenet_weights: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a TorchScript model"):
        load_model(torchscript_spec(mobilenet_weights))


def test_torchscript_uploaded_as_state_dict_is_explained(tmp_path: Path) -> None:
    path = write_torchscript(tmp_path / "tiny.pt", TinyNet())
    with pytest.raises(ModelLoadError, match="is a TorchScript model, not a state dict"):
        load_model(architecture_spec(path))


def test_garbage_is_not_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(ModelLoadError, match="not a TorchScript model"):
        load_model(torchscript_spec(path))


# --- validation ------------------------------------------------------------------------------


def test_validate_model_accepts_matching_model(mobilenet_weights: Path) -> None:
    validate_model(mobilenet_spec(mobilenet_weights), sample_image())


def test_validate_model_reports_output_width(tmp_path: Path) -> None:
    path = write_torchscript(tmp_path / "ten.pt", TinyNet(num_classes=10))
    with pytest.raises(ModelLoadError, match="outputs 10 scores per image but the project has 5"):
        validate_model(torchscript_spec(path), sample_image())
    with pytest.raises(ModelLoadError, match="label order: a, b, c, d, e"):
        validate_model(torchscript_spec(path), sample_image(), labels=list("abcde"))


def test_validate_model_reports_forward_failure(tmp_path: Path) -> None:
    # Trained for 64 px inputs, so its Linear layer cannot take the 32 px features.
    path = write_torchscript(tmp_path / "big.pt", TinyNet(input_size=64))
    with pytest.raises(ModelLoadError, match=r"32x32 RGB image failed: .*cannot be multiplied"):
        validate_model(torchscript_spec(path), sample_image())


class TupleNet(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(2, 3)), x


class NanNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 5), float("nan"))


@pytest.mark.parametrize(
    ("model", "message"), [(TupleNet(), "returns a tuple"), (NanNet(), "NaN or infinite")]
)
def test_validate_model_reports_bad_outputs(model: nn.Module, message: str, tmp_path: Path) -> None:
    path = write_torchscript(tmp_path / "odd.pt", model)
    with pytest.raises(ModelLoadError, match=message):
        validate_model(torchscript_spec(path), sample_image())


class EndlessNet(nn.Module):
    """A forward pass that never ends: the condition stays true (y grows to inf, inf == inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.sum()
        while bool(y == y):
            y = y + 1.0
        return x


def test_subprocess_validation_stops_an_endless_model(tmp_path: Path) -> None:
    from explain_worker.model_validation import ModelValidationTimeout, validate_in_subprocess

    path = write_torchscript(tmp_path / "endless.pt", EndlessNet())
    # Warm the fork server first, so the timing below measures the limit and not torch's import.
    validate_in_subprocess(
        torchscript_spec(write_torchscript(tmp_path / "tiny.pt", TinyNet())), sample_image()
    )
    started = time.monotonic()
    with pytest.raises(ModelValidationTimeout, match=r"longer than 1\.5 seconds"):
        validate_in_subprocess(torchscript_spec(path), sample_image(), timeout=1.5)
    assert time.monotonic() - started < 6


def test_subprocess_validation_keeps_the_checks_and_finds_the_layers(tmp_path: Path) -> None:
    from explain_worker.model_validation import validate_in_subprocess

    checked = validate_in_subprocess(
        torchscript_spec(write_torchscript(tmp_path / "tiny.pt", TinyNet())), sample_image()
    )
    assert checked.layer_names == ["conv"]
    assert checked.default_layer == "conv"
    ten = write_torchscript(tmp_path / "ten.pt", TinyNet(num_classes=10))
    with pytest.raises(ModelLoadError, match="label order: a, b, c, d, e"):
        validate_in_subprocess(torchscript_spec(ten), sample_image(), labels=list("abcde"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ModelLoadError, match="not a TorchScript model"):
        validate_in_subprocess(torchscript_spec(garbage), sample_image())


# --- spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "onnx"}, "Unknown model kind"),
        ({"architecture": None}, "needs an architecture name"),
        ({"num_classes": 0}, "at least 1"),
        ({"std": (0.2, 0.0, 0.2)}, "positive"),
        ({"mean": (0.5, 0.5)}, "exactly 3 values"),
    ],
)
def test_spec_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "kind": "architecture",
        "weights_path": "w.pt",
        "num_classes": NUM_CLASSES,
        "input_size": INPUT_SIZE,
        "mean": MEAN,
        "std": STD,
        "architecture": "resnet18",
    }
    fields.update(changes)
    with pytest.raises(ModelLoadError, match=message):
        ModelSpec(**fields)  # type: ignore[arg-type]


def test_spec_normalises_lists_to_tuples() -> None:
    spec = ModelSpec("torchscript", "m.pt", 2, 8, [0, 0, 0], [1, 1, 1])  # type: ignore[arg-type]
    assert spec.mean == (0.0, 0.0, 0.0)
    assert spec == ModelSpec("torchscript", "m.pt", 2, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


# --- preprocessing ---------------------------------------------------------------------------


def test_preprocess_shape_and_normalisation() -> None:
    images = [
        Image.new("RGB", (10, 7), (255, 0, 51)),
        Image.new("L", (3, 20), 102),
        Image.new("RGBA", (5, 5), (0, 255, 0, 0)),
    ]
    batch = preprocess(images, input_size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert batch.shape == (3, 3, 4, 4)
    assert batch.dtype == torch.float32
    assert batch.is_contiguous()
    expected = torch.tensor(
        [
            [(1.0 - 0.5) / 0.5, (0.0 - 0.5) / 0.25, (0.2 - 0.5) / 0.5],
            [(0.4 - 0.5) / 0.5, (0.4 - 0.5) / 0.25, (0.4 - 0.5) / 0.5],
            [(0.0 - 0.5) / 0.5, (1.0 - 0.5) / 0.25, (0.0 - 0.5) / 0.5],
        ]
    )
    torch.testing.assert_close(batch, expected[:, :, None, None].expand(3, 3, 4, 4))


def test_preprocess_matches_torchvision_transforms() -> None:
    image = sample_image((50, 37))
    pipeline = transforms.Compose(
        [
            transforms.Resize((INPUT_SIZE, INPUT_SIZE)),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    batch = preprocess([image], input_size=INPUT_SIZE, mean=MEAN, std=STD)
    torch.testing.assert_close(batch[0], pipeline(image))


def test_preprocess_empty() -> None:
    assert preprocess([], input_size=8, mean=MEAN, std=STD).shape == (0, 3, 8, 8)


# --- cache and runtime settings --------------------------------------------------------------


def test_model_cache_loads_once_per_key_and_evicts_lru(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loads: list[str] = []

    def fake_load(spec: ModelSpec, device: str | torch.device = "cpu") -> nn.Module:
        loads.append(spec.weights_path)
        return nn.Identity()

    monkeypatch.setattr(model_loading, "load_model", fake_load)
    specs = {key: torchscript_spec(tmp_path / f"{key}.pt") for key in ("a", "b", "c")}
    cache = ModelCache(capacity=2)

    first = cache.get("a", specs["a"])
    assert cache.get("a", specs["a"]) is first
    cache.get("b", specs["b"])
    cache.get("a", specs["a"])  # a becomes most recently used
    cache.get("c", specs["c"])  # evicts b
    assert "b" not in cache
    assert "a" in cache
    assert len(cache) == 2
    cache.get("b", specs["b"])
    assert [Path(p).stem for p in loads] == ["a", "b", "c", "b"]


def test_model_cache_reloads_when_spec_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loads: list[ModelSpec] = []
    monkeypatch.setattr(
        model_loading, "load_model", lambda spec, device="cpu": loads.append(spec) or nn.Identity()
    )
    cache = ModelCache()
    cache.get(1, torchscript_spec(tmp_path / "m.pt"))
    cache.get(1, torchscript_spec(tmp_path / "m.pt", num_classes=3))
    assert len(loads) == 2
    assert len(cache) == 1


def test_model_cache_with_real_model(tmp_path: Path) -> None:
    path = write_torchscript(tmp_path / "tiny.pt", TinyNet())
    cache = ModelCache(capacity=1)
    assert cache.get(42, torchscript_spec(path)) is cache.get(42, torchscript_spec(path))


def test_model_cache_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ModelCache(capacity=0)


def test_configure_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    configure_torch_threads(None)
    configure_torch_threads(2)
    assert calls == [2]
    with pytest.raises(ValueError, match="thread count"):
        configure_torch_threads(0)


def test_pick_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("cuda") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device preference"):
        pick_device("tpu")
