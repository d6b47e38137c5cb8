"""Batched attribution maps (Saliency, Integrated Gradients, Grad-CAM, Occlusion) with Captum.

Every method turns a preprocessed NCHW batch and one target class per image into one 2-D map
per image at the model's input resolution, computed for the whole batch in one Captum call
(Integrated Gradients: one per chunk of images when its internal batch is smaller than the
batch). Models come from ``load_model``: in eval mode with frozen parameters, so every backward
pass here computes gradients for the inputs (or the Grad-CAM layer) only, never for the
weights. Captum runs on a cached copy of the model with batch norms folded into convolutions
and channels_last weights (see :func:`prepare_for_attribution`). This module must stay free of
Django.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import Counter
from itertools import pairwise

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from explain_worker.methods import (  # noqa: F401  (re-exported: the public names of methods)
    ALIASES,
    GRADCAM,
    INTEGRATED_GRADIENTS,
    MAX_IG_STEPS,
    MAX_WINDOW,
    METHODS,
    OCCLUSION,
    SALIENCY,
    SIGNED_METHODS,
    AttributionConfig,
    AttributionConfigError,
    canonical_method,
    map_stats,
    normalise_for_display,
)

# Scaled images per IG forward pass when the caller sets no bound: activation memory then stays
# that of one ordinary batch of 32 (resnet18 at 224 px: about 1.4 GB peak RSS). Small models run
# faster with more per pass (RoomsCNN: 64 is about 1.3 times faster on 2 cores); callers that
# know their model is small pass internal_batch_size.
DEFAULT_IG_INTERNAL_BATCH = 32
# Occluded copies per forward pass; Occlusion is forward-only, so memory is small anyway.
_OCCLUSION_IMAGES_PER_PASS = 128
# How many layer names an error message lists: the last ones are the useful Grad-CAM choices.
_LAYERS_SHOWN = 8


def _is_conv2d(module: nn.Module) -> bool:
    # Scripted submodules are RecursiveScriptModules that only remember their original class name.
    if isinstance(module, torch.jit.ScriptModule):
        return getattr(module, "original_name", None) == "Conv2d"
    return isinstance(module, nn.Conv2d)


def layer_names(model: nn.Module) -> list[str]:
    """Module names usable as Grad-CAM layers, in ``named_modules()`` order.

    These are the ``nn.Conv2d`` modules and every module that contains one (blocks, sequentials),
    whose outputs are normally 4-D feature maps. The root module itself is left out.
    """
    modules = dict(model.named_modules())
    conv_names = [name for name, module in modules.items() if name and _is_conv2d(module)]
    with_conv: set[str] = set()
    for name in conv_names:
        parts = name.split(".")
        with_conv.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [name for name in modules if name in with_conv]


def default_gradcam_layer(model: nn.Module) -> str:
    """The last convolutional block: the parent of the last ``nn.Conv2d``, or that conv itself.

    For example ``layer4.1`` for resnet18, ``features.12`` for mobilenet_v3_small and
    ``features.block4`` for RoomsCNN.
    """
    last_conv = None
    for name, module in model.named_modules():
        if name and _is_conv2d(module):
            last_conv = name
    if last_conv is None:
        raise AttributionConfigError(
            "layer", "Grad-CAM needs a convolutional layer, and this model has none."
        )
    parent, _, _ = last_conv.rpartition(".")
    return parent or last_conv


def validate_config(model: nn.Module, config: AttributionConfig) -> None:
    """Check that ``config`` can run on ``model``; raises :class:`AttributionConfigError`."""
    if config.method != GRADCAM:
        return
    if isinstance(model, torch.jit.ScriptModule):
        # Forward hooks on scripted submodules never fire inside scripted code.
        raise AttributionConfigError(
            "method",
            "Grad-CAM is not available for TorchScript models (their layers cannot be observed); "
            "use saliency, integrated_gradients or occlusion, or upload a state dict with its "
            "architecture name.",
        )
    names = layer_names(model)
    if not names:
        raise AttributionConfigError(
            "layer", "Grad-CAM needs a convolutional layer, and this model has none."
        )
    if config.layer is not None and config.layer not in names:
        shown = ", ".join(names[-_LAYERS_SHOWN:])
        raise AttributionConfigError(
            "layer",
            f"No layer {config.layer!r} in this model; layers with feature maps "
            f"(last {min(len(names), _LAYERS_SHOWN)} of {len(names)}): {shown}.",
        )


def predicted_targets(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The predicted class of each input, as a long tensor on the inputs' device.

    Taken under ``no_grad`` rather than ``inference_mode`` on purpose: inference tensors could
    not be used in the backward passes that follow.
    """
    with torch.no_grad():
        return model(inputs).argmax(dim=1).long()


def attribute_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: AttributionConfig,
    *,
    optimise: bool = True,
) -> np.ndarray:
    """One attribution map per input: ``float32 (N, H, W)`` on the CPU, at the input resolution.

    ``inputs`` is a preprocessed ``(N, C, H, W)`` batch, ``targets`` one class index per input.
    Saliency maps are >= 0 (max over channels of the absolute gradient), Grad-CAM maps >= 0
    (ReLU as in the original paper), Integrated Gradients and Occlusion maps are signed (summed
    over channels).

    With ``optimise`` (the default) the maps are computed on :func:`prepare_for_attribution`'s
    copy of the model, which gives the same maps up to float rounding, faster and in less memory.
    """
    validate_config(model, config)
    if inputs.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(inputs.shape)}")
    n, channels, height, width = inputs.shape
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    device = _model_device(model) or inputs.device
    layer = (config.layer or default_gradcam_layer(model)) if config.method == GRADCAM else None
    # Inference tensors (e.g. from a caller's inference_mode preprocessing) cannot take part in
    # autograd; a plain copy can. Tensors that are already fine are used as they are.
    with torch.inference_mode(False):
        if inputs.is_inference():
            inputs = inputs.clone()
        if targets.is_inference():
            targets = targets.clone()
        x = inputs.detach().to(device=device, dtype=torch.float32)
        target = targets.detach().to(device=device, dtype=torch.long).reshape(-1)
        if target.numel() != n:
            raise ValueError(f"expected {n} targets, got {target.numel()}")
        if optimise:
            model = prepare_for_attribution(model, keep=layer)
            if _is_channels_last(model):
                x = x.contiguous(memory_format=torch.channels_last)
        if config.method == SALIENCY:
            maps = _saliency(model, x, target)
        elif config.method == INTEGRATED_GRADIENTS:
            maps = _integrated_gradients(model, x, target, config)
        elif config.method == GRADCAM:
            assert layer is not None  # set above for Grad-CAM
            maps = _gradcam(model, x, target, layer)
        else:
            maps = _occlusion(model, x, target, config, channels)
    return maps.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


# Prepared copies per model and per kept layer; weak keys, so a copy goes when the model cache
# drops its model.
_PREPARED: weakref.WeakKeyDictionary[nn.Module, dict[str | None, nn.Module]] = (
    weakref.WeakKeyDictionary()
)
_PREPARED_LOCK = threading.Lock()
# torchvision blocks whose forward() feeds each of these convolutions straight into its norm
# layer and nowhere else, so folding the norm into the convolution keeps forward() exact.
_CONV_NORM_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    ResNet: (("conv1", "bn1"),),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def prepare_for_attribution(model: nn.Module, *, keep: str | None = None) -> nn.Module:
    """A cached, faster copy of an eval-mode ``model`` for attribution; the model is untouched.

    Batch norms that directly follow a convolution are folded into it (no normalisation pass
    forward or backward, and no activations saved for it), and weights are converted to
    ``channels_last``, the layout oneDNN's CPU convolutions run fastest in: together measured
    1.4 to 1.5 times faster on 2 CPU cores for resnet18 and RoomsCNN, with a third less memory
    for resnet18. Module names stay the same, so Grad-CAM layers resolve as on the original;
    ``keep`` names a convolution that must not be folded because its own output is attributed.
    TorchScript models, models in training mode and models with hooks registered are returned as
    they are.
    """
    # A copy would keep the hooks, even ones their owners remove later (predict_batch's hook,
    # say, while another thread runs it), and they would then fire on every attribution.
    if isinstance(model, torch.jit.ScriptModule) or model.training or _has_hooks(model):
        return model
    with _PREPARED_LOCK:
        per_layer = _PREPARED.setdefault(model, {})
        prepared = per_layer.get(keep)
        if prepared is None:
            prepared = _fold_conv_norms(copy.deepcopy(model), keep)
            prepared = prepared.to(memory_format=torch.channels_last)
            per_layer[keep] = prepared
    return prepared


def _fold_conv_norms(model: nn.Module, keep: str | None) -> nn.Module:
    # A module registered in several places runs in several contexts; folding would change all.
    uses = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        pairs: list[tuple[str, str]] = list(_CONV_NORM_PAIRS.get(type(module), ()))
        # Only a plain Sequential's forward guarantees that child i feeds child i + 1 alone.
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            pairs += list(pairwise(module._modules))
        for conv_name, norm_name in pairs:
            conv = getattr(module, conv_name, None)
            norm = getattr(module, norm_name, None)
            if (
                f"{prefix}{conv_name}" != keep
                and _foldable(conv, norm)
                and uses[id(conv)] == uses[id(norm)] == 1
            ):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    return model


def _foldable(conv: object, norm: object) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and not conv.training
        and not norm.training
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
    )


def _has_hooks(model: nn.Module) -> bool:
    return any(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        for module in model.modules()
    )


def _is_channels_last(model: nn.Module) -> bool:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.is_contiguous(memory_format=torch.channels_last)
    return False


def _saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Requiring grad up front spares Captum's per-call warning; x is our own detached tensor.
    x.requires_grad_(True)
    grads = Saliency(model).attribute(x, target=target, abs=True)
    with torch.no_grad():
        return grads.amax(dim=1)


def _integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, config: AttributionConfig
) -> torch.Tensor:
    n = len(x)
    internal = config.internal_batch_size or max(n, DEFAULT_IG_INTERNAL_BATCH)
    ig = IntegratedGradients(model)
    # Captum never puts fewer than all N images into one pass (it warns and uses N); split the
    # images instead so that the requested bound on memory holds for any batch size.
    chunk = n if internal >= n else internal
    parts = []
    for start in range(0, n, chunk):
        attributions = ig.attribute(
            x[start : start + chunk],
            baselines=0.0,
            target=target[start : start + chunk],
            n_steps=config.n_steps,
            method="gausslegendre",
            internal_batch_size=max(internal, chunk),
        )
        with torch.no_grad():
            parts.append(attributions.sum(dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    module = model.get_submodule(layer)
    # The input needs no grad: Captum makes the layer output a grad leaf, so backward stops there.
    cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    if cam.ndim != 4:
        raise AttributionConfigError(
            "layer",
            f"Layer {layer!r} outputs shape {tuple(cam.shape)}, not a feature map; pick a "
            "convolutional block.",
        )
    with torch.no_grad():
        upsampled = LayerAttribution.interpolate(
            cam.detach(), tuple(x.shape[2:]), interpolate_mode="bilinear"
        )
        return upsampled[:, 0]


def _occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    config: AttributionConfig,
    channels: int,
) -> torch.Tensor:
    height, width = x.shape[2:]
    if config.window > min(height, width):
        raise AttributionConfigError(
            "window",
            f"The occlusion window ({config.window} px) is larger than the model input "
            f"({height}x{width} px).",
        )
    per_eval = max(1, _OCCLUSION_IMAGES_PER_PASS // len(x))
    attributions = Occlusion(model).attribute(
        x,
        sliding_window_shapes=(channels, config.window, config.window),
        strides=(channels, config.stride, config.stride),
        baselines=0.0,
        target=target,
        perturbations_per_eval=per_eval,
    )
    with torch.no_grad():
        return attributions.sum(dim=1)


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None
