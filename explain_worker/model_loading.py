"""Loading, checking and caching of user-supplied image classification models.

Users upload model files, so everything here treats a file as untrusted input: state dicts are
read with ``torch.load(..., weights_only=True)`` only, and every failure is turned into a
:class:`ModelLoadError` whose message is shown to the user verbatim. This module must stay free
of Django so that the worker and the tests can use it on their own.
"""

from __future__ import annotations

import difflib
import logging
import pickle
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

logger = logging.getLogger(__name__)

ROOMS_CNN = "rooms_cnn"
KIND_ARCHITECTURE = "architecture"
KIND_TORCHSCRIPT = "torchscript"
MODEL_KINDS = (KIND_ARCHITECTURE, KIND_TORCHSCRIPT)
RGB_CHANNELS = 3

# Checkpoint layouts written by common training scripts; the first key present wins.
_STATE_DICT_WRAPPER_KEYS = ("state_dict", "model_state_dict")
# Prefixes added by nn.DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Messages list only a few keys: real mismatches often involve hundreds.
_MAX_KEYS_SHOWN = 3

_SAVE_STATE_DICT_HINT = (
    "Save only the weights with torch.save(model.state_dict(), 'weights.pt') and upload that file."
)


class ModelLoadError(ValueError):
    """A model cannot be used; the message tells the user what is wrong and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load a model version and feed it images."""

    kind: str
    weights_path: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    architecture: str | None = None

    def __post_init__(self) -> None:
        # Checked here so a bad spec fails with a readable message before any file is touched.
        if self.kind not in MODEL_KINDS:
            raise ModelLoadError(
                f"Unknown model kind {self.kind!r}: use one of {', '.join(MODEL_KINDS)}."
            )
        if self.kind == KIND_ARCHITECTURE and not self.architecture:
            raise ModelLoadError(
                "A model uploaded as an architecture with a state dict needs an architecture "
                "name (for example 'resnet18' or 'rooms_cnn')."
            )
        if self.num_classes < 1:
            raise ModelLoadError(
                f"The number of classes must be at least 1, got {self.num_classes}."
            )
        if self.input_size < 1:
            raise ModelLoadError(
                f"The input size must be a positive number of pixels, got {self.input_size}."
            )
        if len(self.mean) != RGB_CHANNELS or len(self.std) != RGB_CHANNELS:
            raise ModelLoadError(
                "Normalisation mean and std need exactly 3 values each (one per RGB channel)."
            )
        # Callers often pass lists (JSON, DB fields); tuples keep the spec comparable and hashable.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if any(s <= 0 for s in self.std):
            raise ModelLoadError(
                f"Normalisation std values must all be positive, got {tuple(self.std)}."
            )


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_architecture`: torchvision classifiers plus ``rooms_cnn``."""
    # module=torchvision.models keeps classification builders only (no detection/segmentation).
    names = set(torchvision.models.list_models(module=torchvision.models))
    names.add(ROOMS_CNN)
    return sorted(names)


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """Build an untrained model by architecture name; weights are never downloaded."""
    if name == ROOMS_CNN:
        # Imported lazily: rooms_cnn is optional for everything else in this module.
        from explain_worker.rooms_cnn import RoomsCNN

        return RoomsCNN(num_classes=num_classes)
    known = list_architectures()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        suggestion = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelLoadError(
            f"Unknown architecture {name!r}.{suggestion} Valid names are 'rooms_cnn' and the "
            "classification models listed by torchvision.models.list_models("
            "module=torchvision.models), for example 'resnet18' or 'mobilenet_v3_small'."
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"Architecture {name!r} cannot be built with {num_classes} classes: {exc}"
        ) from exc


def load_model(spec: ModelSpec, device: str | torch.device = "cpu") -> nn.Module:
    """Load the model described by ``spec``, ready for inference on ``device``.

    The model is returned in eval mode with every parameter frozen, because attribution takes
    gradients with respect to the inputs only.
    """
    if not Path(spec.weights_path).is_file():
        raise ModelLoadError(
            f"The model file {Path(spec.weights_path).name!r} was not found; upload it again."
        )
    if spec.kind == KIND_TORCHSCRIPT:
        model = _load_torchscript(spec.weights_path)
    else:
        assert spec.architecture is not None  # guaranteed by ModelSpec.__post_init__
        model = build_architecture(spec.architecture, spec.num_classes)
        _apply_state_dict(model, _read_state_dict(spec.weights_path), spec.architecture)
    model.eval()
    # Per parameter because ScriptModule does not support Module.requires_grad_().
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(torch.device(device))


def _load_torchscript(path: str) -> nn.Module:
    try:
        return torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError or zip errors here
        # torch's text ("internal miniz error...") would only confuse users; it stays chained.
        raise ModelLoadError(
            "The file is not a TorchScript model. Export it with "
            "torch.jit.script(model).save('model.pt') (or torch.jit.trace), or upload a state "
            "dict (torch.save(model.state_dict(), ...)) together with its architecture name."
        ) from exc


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if _is_torchscript_archive(path):
        # torch.load would refuse it anyway, with advice to drop weights_only.
        raise ModelLoadError(
            "The file is a TorchScript model, not a state dict: upload it as a TorchScript model "
            "(no architecture name needed)."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _looks_like_pickle(path):
            # weights_only refused a Python object: a whole pickled model or some other object.
            raise ModelLoadError(
                "The file is not a state dict: it contains pickled Python objects (for example "
                "a whole model saved with torch.save(model)), which are never loaded for "
                f"security reasons. {_SAVE_STATE_DICT_HINT}"
            ) from exc
        raise _unreadable_weights_error() from exc
    except Exception as exc:  # corrupt or foreign files fail in many different ways
        raise _unreadable_weights_error() from exc
    return _extract_state_dict(loaded)


def _is_torchscript_archive(path: str) -> bool:
    # Same marker torch uses: TorchScript zips carry constants.pkl, torch.save zips do not.
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _looks_like_pickle(path: str) -> bool:
    # torch.save writes a zip holding data.pkl; legacy torch files and bare pickles start with
    # the pickle PROTO opcode. Anything else is not a serialised Python object at all.
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"


def _unreadable_weights_error() -> ModelLoadError:
    # torch's own message is left out on purpose: it advises weights_only=False, which is exactly
    # what must never be done with an uploaded file. It stays chained for the logs.
    return ModelLoadError(
        "The file could not be read as PyTorch weights; it may be corrupt, truncated or in "
        f"another format. {_SAVE_STATE_DICT_HINT}"
    )


def _extract_state_dict(loaded: object) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for wrapper_key in _STATE_DICT_WRAPPER_KEYS:
            inner = loaded.get(wrapper_key)
            if isinstance(inner, Mapping):
                loaded = inner
                break
    if not isinstance(loaded, Mapping):
        raise ModelLoadError(
            f"The file is not a state dict: it holds a {type(loaded).__name__}, not a mapping of "
            f"parameter names to tensors. {_SAVE_STATE_DICT_HINT}"
        )
    bad_keys = [
        repr(key)
        for key, value in loaded.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad_keys:
        raise ModelLoadError(
            "The file is not a state dict: some entries are not parameter tensors "
            f"({_format_keys(bad_keys)}). If it is a training checkpoint, put the weights under "
            f"a 'state_dict' key or save them alone. {_SAVE_STATE_DICT_HINT}"
        )
    if not loaded:
        raise ModelLoadError(f"The state dict in the file is empty. {_SAVE_STATE_DICT_HINT}")
    return _strip_wrapper_prefixes(dict(loaded))


def _strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Strip only when every key carries the prefix, so a real submodule named "module" survives.
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                changed = True
    return state_dict


def _apply_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], architecture: str
) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} (file {tuple(state_dict[key].shape)}, expected {tuple(expected[key].shape)})"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {_format_keys(unexpected)}")
    if mismatched:
        problems.append(f"different shapes for {_format_keys(mismatched)}")
    if problems:
        raise ModelLoadError(
            f"The weights do not fit the {architecture!r} architecture: {'; '.join(problems)}. "
            "The model was probably trained with a different architecture or number of classes; "
            "pick the architecture it was built with, or upload it as TorchScript."
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # e.g. dtypes that cannot be copied into the parameters
        raise ModelLoadError(
            f"The weights could not be loaded into the {architecture!r} architecture: {exc}"
        ) from exc


def _format_keys(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def preprocess(
    images: Sequence[Image.Image],
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Turn PIL images into a normalised float32 NCHW batch.

    Matches torchvision's ``Resize((s, s))`` (bilinear, antialiased on PIL images),
    ``ToTensor()`` and ``Normalize(mean, std)``, so models trained with that pipeline see the
    same pixels here. Aspect ratio is not kept.
    """
    if not images:
        return torch.empty((0, 3, input_size, input_size), dtype=torch.float32)
    size = (input_size, input_size)
    pixels = np.stack(
        [
            np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR))
            for image in images
        ]
    ).astype(np.float32)
    pixels /= 255.0
    pixels -= np.asarray(mean, dtype=np.float32)
    pixels /= np.asarray(std, dtype=np.float32)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def validate_model(
    spec: ModelSpec, sample: Image.Image, *, labels: Sequence[str] | None = None
) -> None:
    """Check that ``spec`` loads and classifies ``sample`` into ``spec.num_classes`` scores.

    ``labels`` (the project's class names, in output order) only improves the error message.
    This runs the uploaded model in the calling process with no time limit; a web request uses
    :func:`explain_worker.model_validation.validate_in_subprocess` instead.
    """
    check_model_output(load_model(spec), spec, sample, labels=labels)


def check_model_output(
    model: nn.Module,
    spec: ModelSpec,
    sample: Image.Image,
    *,
    labels: Sequence[str] | None = None,
) -> None:
    """The checks of :func:`validate_model` on a model loaded already."""
    batch = preprocess([sample], input_size=spec.input_size, mean=spec.mean, std=spec.std)
    try:
        with torch.inference_mode():
            output = model(batch)
    except Exception as exc:  # any user-model failure must reach the user, not crash the task
        raise ModelLoadError(
            f"Running the model on a {spec.input_size}x{spec.input_size} RGB image failed: "
            f"{_last_line(exc)}. Check that the input size matches the one the model was "
            "trained with."
        ) from exc
    if not isinstance(output, torch.Tensor):
        raise ModelLoadError(
            f"The model returns a {type(output).__name__} instead of a tensor of class scores; "
            "make its forward() return the logits tensor only."
        )
    if output.ndim != 2 or output.shape[0] != 1:
        raise ModelLoadError(
            f"The model outputs a tensor of shape {tuple(output.shape)} for one image, but a "
            f"(1, {spec.num_classes}) tensor of class scores is expected."
        )
    if output.shape[1] != spec.num_classes:
        order = f" (label order: {', '.join(labels)})" if labels else ""
        raise ModelLoadError(
            f"The model outputs {output.shape[1]} scores per image but the project has "
            f"{spec.num_classes} classes{order}. Use a model with one output per class, in the "
            "project's label order."
        )
    if not torch.isfinite(output).all():
        raise ModelLoadError(
            "The model produced NaN or infinite scores for a test image; check the weights."
        )


def _last_line(exc: Exception) -> str:
    # TorchScript errors carry a long serialized-code traceback; its last line is the cause.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else type(exc).__name__


class ModelCache:
    """Per-process LRU cache of loaded models, keyed by the caller (e.g. model version id).

    A key is assumed to always describe the same model; a different spec or device for a cached
    key reloads it.
    """

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, tuple[ModelSpec, torch.device, nn.Module]] = (
            OrderedDict()
        )
        # Held while loading too, so two threads never load the same large model twice.
        self._lock = threading.Lock()

    def get(self, key: Hashable, spec: ModelSpec, device: str | torch.device = "cpu") -> nn.Module:
        target = torch.device(device)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == spec and entry[1] == target:
                self._entries.move_to_end(key)
                return entry[2]
            # Drop the stale entry first so its memory can be freed before the next load.
            self._entries.pop(key, None)
            model = load_model(spec, target)
            self._entries[key] = (spec, target, model)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return model

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def configure_torch_threads(n: int | None) -> None:
    """Limit intra-op CPU threads, so several worker processes do not oversubscribe cores."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    torch.set_num_threads(n)


def pick_device(prefer: str = "auto") -> torch.device:
    """Resolve ``auto``/``cuda``/``cpu`` to a device, using CUDA only when it is available."""
    if prefer not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device preference must be 'auto', 'cuda' or 'cpu', got {prefer!r}")
    if prefer in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if prefer == "cuda":
        logger.warning("CUDA was requested but is not available; using the CPU")
    return torch.device("cpu")
