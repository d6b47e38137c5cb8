import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.management.progress import follow_job
from annotations.models import ModelKind, Project


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


class Command(BaseCommand):
    help = (
        "Register a model version: an architecture name + state dict, or a TorchScript file. "
        "It is validated by a forward pass, then a worker computes its predictions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("weights", type=Path, help="state dict (.pt/.pth) or TorchScript")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--architecture",
            default="",
            help="torchvision model name, e.g. resnet18 (omit for TorchScript)",
        )
        parser.add_argument("--torchscript", action="store_true")
        parser.add_argument("--input-size", type=int, default=224)
        parser.add_argument("--mean", type=_floats, default=[0.485, 0.456, 0.406])
        parser.add_argument("--std", type=_floats, default=[0.229, 0.224, 0.225])
        parser.add_argument(
            "--label-order",
            default="",
            help="comma-separated classes in output order (default: project's)",
        )
        parser.add_argument(
            "--wait", action="store_true", help="follow the prediction job with a progress bar"
        )

    def handle(self, *args: object, **o: object) -> None:
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"No project '{o['project']}'.")
        weights: Path = o["weights"]  # type: ignore[assignment]
        spec = services.ModelSpecInput(
            name=str(o["name"]),
            kind=ModelKind.TORCHSCRIPT if o["torchscript"] else ModelKind.ARCHITECTURE,
            architecture=str(o["architecture"]),
            input_size=int(o["input_size"]),  # type: ignore[arg-type]
            mean=o["mean"],  # type: ignore[arg-type]
            std=o["std"],  # type: ignore[arg-type]
            label_order=[x for x in str(o["label_order"]).split(",") if x],
        )
        try:
            with weights.open("rb") as fh:
                mv, job = services.model_version_register(
                    project=project,
                    spec=spec,
                    weights_file=File(fh, name=weights.name),
                    created_by=None,
                )
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from exc
        self.stdout.write(f"registered {mv} (id {mv.pk}); prediction job {job.pk} queued")
        if o["wait"]:
            job = follow_job(job.pk)
            self.stdout.write(f"job {job.pk}: {job.status} {job.done}/{job.total}")
