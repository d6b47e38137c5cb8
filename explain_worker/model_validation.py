"""Bounded validation of an uploaded model: load and forward pass in a child process.

A TorchScript model is code: its ``forward`` (or a ``__setstate__`` run on load) can loop
forever, and a web request must not wait for it. :func:`validate_in_subprocess` runs the load,
the checks of :func:`model_loading.validate_model` and the Grad-CAM layer lookup in a child
process and kills it (SIGKILL) once ``timeout`` seconds have passed.

The child comes from a ``forkserver``: a fresh interpreter that imports torch and this module
once, then forks one child per validation. The first validation of a process pays for that
import (a few seconds); later ones start in milliseconds. The fork server never runs a tensor
operation, so its children start with no thread pools to inherit. This module must stay free
of Django.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from PIL import Image

from explain_worker.model_loading import ModelLoadError, ModelSpec

logger = logging.getLogger(__name__)

# A forward pass of a classifier on one image takes well under a second; loading a large
# model from disk a few more. Callers pass their own limit (the web app's setting).
DEFAULT_TIMEOUT_SECONDS = 20.0
# Intra-op threads of the child: enough for a quick forward pass, few enough that a model that
# spins until it is killed leaves the web server's other cores alone.
_CHILD_THREADS = 2

_context_lock = threading.Lock()
_context: Any = None


class ModelValidationTimeout(ModelLoadError):
    """The model did not load and classify a test image within the time limit."""


@dataclass(frozen=True)
class ValidatedModel:
    """What registration keeps from the check: the Grad-CAM layers of the model."""

    layer_names: list[str]
    default_layer: str


def _forkserver_context() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                # The server imports torch once; every child is forked from it ready to run.
                context.set_forkserver_preload([__name__, "explain_worker.attribution"])
            else:  # Windows: each child starts a fresh interpreter (slower, same limits)
                context = multiprocessing.get_context("spawn")
            _context = context
        return _context


def validate_in_subprocess(
    spec: ModelSpec,
    sample: Image.Image,
    *,
    labels: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ValidatedModel:
    """Load ``spec``, run it on ``sample`` and check its output, in a child process.

    Raises :class:`ModelLoadError` with the user-facing message of the check that failed,
    :class:`ModelValidationTimeout` when the child is still busy after ``timeout`` seconds
    (it is killed), and :class:`ModelLoadError` when the child dies (for example of a
    segfault in a crafted TorchScript file, or killed for memory). ``spec.weights_path`` must
    be readable by the child (same machine, same user).
    """
    context = _forkserver_context()
    reader, writer = context.Pipe(duplex=False)
    # Resized here as preprocess() would, so a large sample image crosses to the child small.
    size = (spec.input_size, spec.input_size)
    image = sample.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    process = context.Process(
        target=_child_main,
        args=(
            writer,
            _plain_spec(spec),
            image,
            [_plain_str(label) for label in labels] if labels is not None else None,
        ),
        name="model-validation",
        daemon=True,
    )
    try:
        # Returns once the child is forked: the fork server's first start (importing torch)
        # is not counted against the limit.
        try:
            process.start()
        finally:
            writer.close()  # the child holds its copy; EOF on the reader means it is gone
        started = time.monotonic()
        # Data or EOF, whichever comes first; the child sends one small message and exits.
        if not wait([reader], timeout=timeout):
            _kill(process)
            logger.warning(
                "model validation killed after %.1f s (limit %.1f s)",
                time.monotonic() - started,
                timeout,
            )
            raise ModelValidationTimeout(
                f"Loading the model and classifying one test image took longer than "
                f"{timeout:g} seconds, so the check was stopped. Upload a model whose forward "
                "pass ends quickly (for example one without an endless loop)."
            )
        try:
            outcome = reader.recv()
        except (EOFError, OSError):
            outcome = None
        process.join(timeout=max(1.0, timeout - (time.monotonic() - started)))
        if process.is_alive():
            _kill(process)
    finally:
        reader.close()
        if process.is_alive():
            _kill(process)
    if outcome is None:
        logger.warning("model validation process died with exit code %s", process.exitcode)
        raise ModelLoadError(
            "The model crashed the process that checked it (exit code "
            f"{process.exitcode}) while loading it or classifying a test image. Check that "
            "the file is a model saved by this PyTorch version and fits in memory."
        )
    kind, payload = outcome
    if kind == "ok":
        return ValidatedModel(layer_names=payload[0], default_layer=payload[1])
    if kind == "invalid":
        raise ModelLoadError(payload)
    logger.error("model validation failed unexpectedly:\n%s", payload)
    raise ModelLoadError(
        "The model could not be checked: loading it or classifying a test image raised an "
        "unexpected error. Check that the file is a PyTorch model for this PyTorch version."
    )


def _plain_str(value: object) -> str:
    # The child unpickles its arguments without the caller's modules (no Django there), so a
    # str subclass such as a TextChoices member must cross as a plain str.
    return str.__str__(value) if isinstance(value, str) else str(value)


def _plain_spec(spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(
        spec,
        kind=_plain_str(spec.kind),
        weights_path=_plain_str(spec.weights_path),
        architecture=None if spec.architecture is None else _plain_str(spec.architecture),
        num_classes=int(spec.num_classes),
        input_size=int(spec.input_size),
    )


def _kill(process: Any) -> None:
    process.kill()
    process.join(timeout=5)


def _child_main(
    writer: Connection, spec: ModelSpec, sample: Image.Image, labels: list[str] | None
) -> None:
    """Runs in the child: the checks, then one message ``(kind, payload)``.

    ``("ok", (layer names, default layer))``, ``("invalid", user message)`` or
    ``("error", traceback text)`` for the server's log.
    """
    import traceback

    import torch

    from explain_worker import attribution, model_loading

    try:
        torch.set_num_threads(max(1, min(_CHILD_THREADS, torch.get_num_threads())))
        model = model_loading.load_model(spec)
        model_loading.check_model_output(model, spec, sample, labels=labels)
        names = attribution.layer_names(model)
        default = attribution.default_gradcam_layer(model) if names else ""
        message: tuple[str, Any] = ("ok", (names, default))
    except ModelLoadError as exc:
        message = ("invalid", str(exc))
    except BaseException:
        message = ("error", traceback.format_exc())
    try:
        writer.send(message)
    finally:
        writer.close()
