"""Attribution methods and their settings, without torch: the web process validates a
method name or a configuration and scales stored maps for display without importing
torch or Captum (about 700 MB per web worker). ``explain_worker.attribution`` computes
the maps and re-exports these names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

SALIENCY = "saliency"
INTEGRATED_GRADIENTS = "integrated_gradients"
GRADCAM = "gradcam"
OCCLUSION = "occlusion"

METHODS: dict[str, str] = {
    SALIENCY: "Saliency: absolute input gradient of the class score (max over channels).",
    INTEGRATED_GRADIENTS: (
        "Integrated Gradients from a black (zero) baseline, summed over channels; signed."
    ),
    GRADCAM: "Grad-CAM on a convolutional layer, upsampled to the input size.",
    OCCLUSION: "Occlusion: drop in the class score when a square patch is set to zero; signed.",
}

ALIASES: dict[str, str] = {
    "ig": INTEGRATED_GRADIENTS,
    "integratedgradients": INTEGRATED_GRADIENTS,
    "integrated-gradients": INTEGRATED_GRADIENTS,
    "grad_cam": GRADCAM,
    "grad-cam": GRADCAM,
    "layer_gradcam": GRADCAM,
    "layergradcam": GRADCAM,
    "vanilla_gradient": SALIENCY,
    "gradient": SALIENCY,
    "feature_occlusion": OCCLUSION,
}

# Methods whose maps can be negative (evidence against the class); the others are >= 0.
SIGNED_METHODS = frozenset({INTEGRATED_GRADIENTS, OCCLUSION})

MAX_IG_STEPS = 512
MAX_WINDOW = 512


class AttributionConfigError(ValueError):
    """An attribution setting is invalid; ``field`` names it, ``message`` is shown to the user."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def canonical_method(name: str) -> str:
    """Resolve a method name or alias (case-insensitive) to its canonical name."""
    key = name.strip().lower()
    if key in METHODS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    raise AttributionConfigError(
        "method", f"Unknown method {name!r}; use one of {', '.join(METHODS)}."
    )


@dataclass(frozen=True)
class AttributionConfig:
    """One attribution method and its settings; stored with each explanation via ``params()``."""

    method: str
    n_steps: int = 32
    internal_batch_size: int | None = None
    layer: str | None = None
    window: int = 8
    stride: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", canonical_method(self.method))
        if self.layer is not None:
            object.__setattr__(self, "layer", self.layer.strip() or None)
        # Ranges are checked for every method, so a stored config is valid whatever it is used for.
        _check_int("n_steps", self.n_steps, 1, MAX_IG_STEPS, "Integrated Gradients steps")
        if self.internal_batch_size is not None:
            _check_int("internal_batch_size", self.internal_batch_size, 1, None, "internal batch")
        _check_int("window", self.window, 1, MAX_WINDOW, "occlusion window")
        _check_int("stride", self.stride, 1, MAX_WINDOW, "occlusion stride")
        if self.stride > self.window:
            raise AttributionConfigError(
                "stride",
                f"The occlusion stride ({self.stride} px) must not exceed the window "
                f"({self.window} px), or some pixels would never be occluded.",
            )

    @property
    def signed(self) -> bool:
        """Whether maps of this method can be negative (evidence against the class)."""
        return self.method in SIGNED_METHODS

    def params(self) -> dict[str, Any]:
        """JSON-ready settings relevant to this method, including the method name."""
        params: dict[str, Any] = {"method": self.method}
        if self.method == INTEGRATED_GRADIENTS:
            params.update(
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
                baseline="zero",
                integration="gausslegendre",
            )
        elif self.method == GRADCAM:
            params.update(layer=self.layer, relu=True, upsample="bilinear")
        elif self.method == OCCLUSION:
            params.update(window=self.window, stride=self.stride, baseline="zero")
        return params


# Settings that change how a map is computed, not what it is (memory use only).
NOT_IN_RESULT = ("internal_batch_size",)


def settings_key(params: dict[str, Any], default_layer: str | None = None) -> str:
    """Which map of a method ``params`` (as ``AttributionConfig.params()`` stores them)
    make: "" for the method's default settings (Grad-CAM: on ``default_layer``), which is
    the map review rounds show; else a digest of the settings that define the map, so
    maps with other settings (64 Integrated Gradients steps, another layer) are kept
    beside it, never in its place."""
    method = params.get("method", "")
    if method not in METHODS:  # imported maps: one per key
        return ""
    default = AttributionConfig(
        method=method, layer=default_layer if method == GRADCAM else None
    ).params()

    def result(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k not in NOT_IN_RESULT}

    if result(params) == result(default):
        return ""
    text = json.dumps(result(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_int(field: str, value: object, low: int, high: int | None, what: str) -> None:
    # bool is an int subclass; True as a step count is always a caller bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise AttributionConfigError(field, f"The {what} must be a whole number, got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise AttributionConfigError(field, f"The {what} must be {bound}, got {value}.")


def normalise_for_display(attribution: np.ndarray) -> np.ndarray:
    """Scale a map for display: to [0, 1] if it has no negative values, else to [-1, 1].

    Both scale by the largest absolute value, so zero stays zero (no evidence) and signed maps
    keep the relative strength of evidence for and against. All-zero maps stay zero.
    """
    values = np.nan_to_num(np.asarray(attribution, dtype=np.float32), nan=0.0)
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak == 0.0 or not np.isfinite(peak):
        return np.zeros_like(values)
    return values / peak


def map_stats(attribution: np.ndarray) -> dict[str, float]:
    """Summary numbers stored with a map: ``min``, ``max`` and ``mean_abs``."""
    values = np.asarray(attribution, dtype=np.float32)
    if values.size == 0:
        return {"min": 0.0, "max": 0.0, "mean_abs": 0.0}
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean_abs": float(np.abs(values).mean()),
    }
