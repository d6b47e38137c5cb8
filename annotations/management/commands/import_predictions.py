import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.management.progress import follow_job
from annotations.models import Project


class Command(BaseCommand):
    help = (
        "Register a predictions-only model version from a CSV or JSON of per-instance class "
        "probabilities, optionally with a zip of saliency maps (<instance id>.png or .npy)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("predictions", type=Path)
        parser.add_argument("--project", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--saliency", type=Path)
        parser.add_argument("--label-order", default="")
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args: object, **o: object) -> None:
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"No project '{o['project']}'.")
        spec = services.ModelSpecInput(
            name=str(o["name"]),
            kind="predictions_only",
            input_size=224,
            mean=[0.0, 0.0, 0.0],
            std=[1.0, 1.0, 1.0],
            label_order=[x for x in str(o["label_order"]).split(",") if x],
        )
        path: Path = o["predictions"]  # type: ignore[assignment]
        saliency: Path | None = o["saliency"]  # type: ignore[assignment]
        try:
            with path.open("rb") as fh:
                sal = saliency.open("rb") if saliency else None
                try:
                    mv, job = services.predictions_import_start(
                        project=project,
                        spec=spec,
                        predictions_file=File(fh, name=path.name),
                        saliency_file=File(sal, name=saliency.name) if sal and saliency else None,
                        created_by=None,
                    )
                finally:
                    if sal:
                        sal.close()
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from exc
        self.stdout.write(f"registered {mv} (id {mv.pk}); import job {job.pk} queued")
        if o["wait"]:
            job = follow_job(job.pk)
            self.stdout.write(f"job {job.pk}: {job.status} {job.done}/{job.total}")
