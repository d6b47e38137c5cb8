"""Forms of the scientist pages. They parse and present input only: every rule about what is
valid lives in the services (``annotations.services``, ``annotations.sampling``), whose
ValidationErrors ``add_service_errors`` puts next to the field they name, exactly as the API
answers 400 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.forms import formset_factory

from annotations import limits, sampling
from annotations.models import ModelKind, ModelVersion, Project, Question, Role, Split

# --- Mapping service errors onto forms ----------------------------------------------------


def service_error_fields(exc: ValidationError) -> dict[str, list[str]]:
    """``{field: [messages]}`` of a service's ValidationError (``field_error`` names one
    field; a bare message becomes a non-field error under ``"__all__"``)."""
    if hasattr(exc, "error_dict"):
        return {k: [str(m) for m in v] for k, v in exc.message_dict.items()}
    return {"__all__": [str(m) for m in exc.messages]}


def add_service_errors(
    form: forms.Form, exc: ValidationError, aliases: Mapping[str, str] | None = None
) -> None:
    """Show a service's errors on ``form``: next to the field of the same name (or its alias
    in ``aliases``), else at the top of the form, so no message is ever dropped."""
    for name, messages in service_error_fields(exc).items():
        target = (aliases or {}).get(name, name)
        for message in messages:
            form.add_error(target if target in form.fields else None, message)


def counted(field: forms.Field, limit: int) -> forms.Field:
    """Give a text field the page's live counter (``frontend/static/frontend/limits.js``)
    in place of the ``maxlength`` attribute Django adds, which makes a browser cut pasted
    text silently; the form and the service still refuse longer text with a message."""
    field.max_length = limit
    field.widget.attrs.pop("maxlength", None)
    field.widget.attrs["data-limit"] = str(limit)
    return field


class CountedForm(forms.Form):
    """A form whose text fields with a ``max_length`` show a counter instead of a silent
    ``maxlength`` (see ``counted``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.CharField) and field.max_length:
                counted(field, field.max_length)


def _floats(text: str, field: str) -> list[float]:
    try:
        return [float(v) for v in re.split(r"[\s,]+", text.strip()) if v]
    except ValueError as exc:
        raise ValidationError(f"Give numbers separated by commas for {field}.") from exc


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# --- Project setup ------------------------------------------------------------------------


class DatasetImportForm(CountedForm):
    """Same options as the API's DatasetImportInput."""

    name = forms.CharField(max_length=limits.NAME, label="Dataset name")
    archive = forms.FileField(
        label="Zip archive", help_text="ImageFolder layout, or images with a manifest."
    )
    manifest = forms.FileField(
        required=False, label="Manifest (optional)", help_text="CSV or JSON, if not in the zip."
    )
    default_split = forms.ChoiceField(
        choices=Split.choices,
        initial=Split.TRAIN,
        required=False,
        label="Split for images without one",
    )
    on_error = forms.ChoiceField(
        choices=[("skip", "Skip bad files and list them"), ("reject", "Reject the whole import")],
        initial="skip",
        required=False,
        label="Bad files",
    )

    # Optional with the API's defaults, so a script posting only name and archive works.
    def clean_default_split(self) -> str:
        return self.cleaned_data["default_split"] or Split.TRAIN

    def clean_on_error(self) -> str:
        return self.cleaned_data["on_error"] or "skip"


class ModelSpecForm(CountedForm):
    """The preprocessing every model version carries (services.ModelSpecInput)."""

    name = forms.CharField(max_length=limits.NAME, label="Version name")
    input_size = forms.IntegerField(initial=224, label="Input size (px, square)")
    mean = forms.CharField(initial="0.485, 0.456, 0.406", label="Mean (R, G, B)")
    std = forms.CharField(initial="0.229, 0.224, 0.225", label="Std (R, G, B)")
    label_order = forms.CharField(
        required=False,
        label="Label order (optional)",
        help_text="Class names in the order of the outputs, comma-separated; "
        "default: the project's order.",
    )
    notes = forms.CharField(
        required=False, max_length=limits.DESCRIPTION, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean_mean(self) -> list[float]:
        return _floats(self.cleaned_data["mean"], "mean")

    def clean_std(self) -> list[float]:
        return _floats(self.cleaned_data["std"], "std")

    def clean_label_order(self) -> list[str]:
        return _names(self.cleaned_data["label_order"])

    def spec_values(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "name": d["name"],
            "input_size": d["input_size"],
            "mean": d["mean"],
            "std": d["std"],
            "label_order": d["label_order"],
            "notes": d.get("notes", ""),
        }


class ModelRegisterForm(ModelSpecForm):
    """Same fields as the API's ModelRegisterInput: an architecture and its state dict, or a
    TorchScript file."""

    kind = forms.ChoiceField(
        choices=[
            (ModelKind.ARCHITECTURE, ModelKind.ARCHITECTURE.label),
            (ModelKind.TORCHSCRIPT, ModelKind.TORCHSCRIPT.label),
        ],
        initial=ModelKind.ARCHITECTURE,
    )
    architecture = forms.CharField(
        required=False,
        help_text="A torchvision classification model, e.g. resnet18 (not for TorchScript).",
        widget=forms.TextInput(attrs={"list": "architectures", "autocomplete": "off"}),
    )
    weights = forms.FileField(help_text="A state dict (.pt/.pth) or a TorchScript file.")

    field_order = ["name", "kind", "architecture", "weights"]


class PredictionsImportForm(ModelSpecForm):
    """Same fields as the API's PredictionsImportInput (a model that is not PyTorch)."""

    predictions = forms.FileField(
        help_text="CSV with instance_id (or path, content_hash) and one column per class, "
        "or the JSON list form."
    )
    saliency = forms.FileField(
        required=False,
        label="Saliency maps (optional)",
        help_text="A zip of <instance id>.png or .npy maps.",
    )

    field_order = ["name", "predictions", "saliency"]


class PredictionsComputeForm(forms.Form):
    """Compute the predictions still missing (after importing more data, for instance)."""

    model_version = forms.ModelChoiceField(queryset=ModelVersion.objects.none())

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A predictions-only version has no model to run.
        self.fields["model_version"].queryset = project.model_versions.exclude(
            kind=ModelKind.PREDICTIONS_ONLY
        ).order_by("version")


# --- Round creation -----------------------------------------------------------------------

PART_KIND_CHOICES = [
    ("", "(no part)"),
    ("all_errors", "All errors"),
    ("confusion_quota", "Errors per confusion cell"),
    ("lowest_confidence", "Lowest confidence"),
    ("confident_errors", "Confident errors"),
    ("control", "Control sample of correct predictions"),
    ("ids", "Instances by id"),
    ("stratified", "Stratified per class"),
]
# The form fields each kind uses, in the names of annotations/sampling.py.
PART_FIELDS: dict[str, tuple[str, ...]] = {
    "all_errors": (),
    "confusion_quota": ("per_cell",),
    "lowest_confidence": ("n",),
    "confident_errors": ("threshold", "n"),
    "control": ("n",),
    "ids": ("ids",),
    "stratified": ("per_class", "by"),
}
assert set(PART_FIELDS) == set(sampling.KINDS), "a sampling kind has no form fields"


class SamplingPartForm(forms.Form):
    """One part of the sampling strategy. The page's script shows only the fields the chosen
    kind uses; without it all are shown and the others are ignored."""

    kind = forms.ChoiceField(choices=PART_KIND_CHOICES, required=False)
    n = forms.IntegerField(required=False, min_value=1, label="How many")
    per_cell = forms.IntegerField(required=False, min_value=1, label="Per cell")
    threshold = forms.FloatField(
        required=False, label="Confidence at least", widget=forms.NumberInput(attrs={"step": 0.01})
    )
    per_class = forms.IntegerField(required=False, min_value=1, label="Per class")
    by = forms.ChoiceField(
        required=False,
        choices=[("true", "true label"), ("predicted", "predicted label")],
        label="Classes by",
    )
    ids = forms.CharField(required=False, label="Instance ids", help_text="comma-separated")

    def clean_ids(self) -> list[int]:
        text = self.cleaned_data["ids"]
        try:
            return [int(v) for v in re.split(r"[\s,]+", text.strip()) if v]
        except ValueError as exc:
            raise ValidationError("Give instance ids as numbers separated by commas.") from exc

    def to_part(self) -> dict[str, Any] | None:
        """The part as annotations/sampling.py reads it; None for an empty row. Fields left
        blank are left out so the sampler's own "is required" message names them."""
        kind = self.cleaned_data.get("kind")
        if not kind:
            return None
        part: dict[str, Any] = {"kind": kind}
        for name in PART_FIELDS[kind]:
            value = self.cleaned_data.get(name)
            if value not in (None, "", []):
                part[name] = value
        return part


SamplingPartFormSet = formset_factory(SamplingPartForm, extra=1, max_num=sampling.MAX_PARTS)

DEFAULT_PARTS: list[dict[str, Any]] = [
    {"kind": "confusion_quota", "per_cell": 5},
    {"kind": "confident_errors", "threshold": 0.9, "n": 20},
    {"kind": "control", "n": 20},
]

METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "saliency": "Saliency (input gradient)",
    "integrated_gradients": "Integrated gradients",
    "occlusion": "Occlusion",
    "imported": "Imported with the predictions",
}
NO_SALIENCY = ("", "None: show no saliency")


def method_choices(model_version: ModelVersion | None) -> list[tuple[str, str]]:
    """The saliency methods a round of ``model_version`` can show (a TorchScript model has
    no Grad-CAM, a predictions-only version only its imported maps), best first, then
    "None"."""
    from annotations.services import explanations

    names = explanations.available_methods(model_version) if model_version else []
    return [(m, METHOD_LABELS.get(m, m)) for m in names] + [NO_SALIENCY]


class RoundForm(CountedForm):
    """The round's settings besides the sampling parts (see services.reviews.round_create)."""

    name = forms.CharField(max_length=limits.NAME, label="Round name")
    description = forms.CharField(
        required=False,
        max_length=limits.ROUND_DESCRIPTION,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="For the team. In a blind-first round experts see it only with the name.",
    )
    show_name_to_experts = forms.BooleanField(
        required=False,
        initial=False,
        label="Show the round's name to experts",
        help_text=(
            'Off: in a blind-first round experts see a neutral title ("Review round 12"), '
            'because a name like "test-split errors" tells them the model was wrong before '
            "they judge."
        ),
    )
    model_version = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), empty_label=None)
    split = forms.ChoiceField(
        required=False,
        choices=[("", "All splits"), *Split.choices],
        initial=Split.TEST,
        label="Sample from split",
    )
    seed = forms.IntegerField(
        initial=0, min_value=0, required=False, help_text="Same seed, same sample."
    )
    limit = forms.IntegerField(
        required=False, min_value=1, label="At most", help_text="instances in all (optional)"
    )
    overlap = forms.IntegerField(initial=1, label="Experts per instance")
    experts = forms.ModelMultipleChoiceField(
        queryset=None, required=False, widget=forms.CheckboxSelectMultiple
    )
    due_at = forms.DateTimeField(
        required=False,
        label="Due",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    blind_first = forms.BooleanField(
        required=False,
        initial=True,
        label="Blind first",
        help_text="Experts give their own label and evidence before they see the model's.",
    )
    explanation_method = forms.ChoiceField(
        choices=[NO_SALIENCY], required=False, label="Saliency shown"
    )
    questions = forms.MultipleChoiceField(
        choices=Question.choices,
        initial=Question.values,
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        versions = list(project.model_versions.order_by("-version"))
        self.fields["model_version"].queryset = project.model_versions.order_by("-version")
        # Only the methods the chosen version can show; the page's script swaps the list
        # when another version is picked (``method_choices_by_version``).
        self.method_choices_by_version = {mv.pk: method_choices(mv) for mv in versions}
        chosen = self.data.get("model_version") if self.is_bound else None
        chosen = (
            chosen or self.initial.get("model_version") or (versions[0].pk if versions else None)
        )
        try:
            choices = self.method_choices_by_version.get(int(getattr(chosen, "pk", chosen)))
        except (TypeError, ValueError):
            choices = None
        self.fields["explanation_method"].choices = choices or [NO_SALIENCY]
        if not self.is_bound:
            self.initial.setdefault(
                "explanation_method", self.fields["explanation_method"].choices[0][0]
            )
        # Only the project's experts can be put on a round (round_create checks it again).
        self.fields["experts"].queryset = (
            get_user_model()
            .objects.filter(memberships__project=project, memberships__role=Role.EXPERT)
            .distinct()
            .order_by("username")
        )
        self.fields["experts"].label_from_instance = lambda u: u.get_username()

    def strategy(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "split": d.get("split") or None,
            "seed": d["seed"] if d.get("seed") is not None else 0,
            "limit": d.get("limit"),
            "parts": parts,
        }


# Service field -> RoundForm field, for errors that name the strategy's top level.
STRATEGY_ALIASES = {
    "sampling.split": "split",
    "sampling.seed": "seed",
    "sampling.limit": "limit",
}
_PART_FIELD = re.compile(r"^sampling\.parts\[(\d+)\](?:\.(\w+))?")


def add_round_errors(
    exc: ValidationError,
    *,
    form: RoundForm,
    parts: Any,
    part_rows: Sequence[int],
) -> list[str]:
    """Put the errors of ``round_create`` (or of the sampler) where they belong: a part's
    field (``sampling.parts[2].n`` names the third non-empty row, ``part_rows`` maps it to
    its form), a setting of the round, or the sampling section. Returns the messages about
    the sampling as a whole (no part named), for the section's own error list."""
    sampling_errors: list[str] = []
    for name, messages in service_error_fields(exc).items():
        match = _PART_FIELD.match(name)
        if match and int(match.group(1)) < len(part_rows):
            part_form = parts.forms[part_rows[int(match.group(1))]]
            field = match.group(2)
            for message in messages:
                part_form.add_error(field if field in part_form.fields else None, message)
        elif name in STRATEGY_ALIASES:
            for message in messages:
                form.add_error(STRATEGY_ALIASES[name], message)
        elif name.startswith("sampling"):
            sampling_errors.extend(messages)
        else:
            for message in messages:
                form.add_error(name if name in form.fields else None, message)
    return sampling_errors


# --- Instance page ------------------------------------------------------------------------


class CommentForm(CountedForm):
    # The length rule is the service's (services.comments); the form only carries the text.
    body = forms.CharField(
        required=False,
        max_length=limits.INSTANCE_COMMENT,
        label="Add a comment",
        widget=forms.Textarea(attrs={"rows": 3}),
        strip=False,
    )
