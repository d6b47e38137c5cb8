from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.management.progress import progress_bar
from annotations.models import Project


class Command(BaseCommand):
    help = (
        "Import a zip of images (ImageFolder layout, or with a CSV/JSON manifest) into a "
        "dataset of a project. Runs in this process with a progress bar."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", type=Path)
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--name", required=True, help="dataset name")
        parser.add_argument("--manifest", type=Path, help="CSV or JSON manifest outside the zip")
        parser.add_argument("--split", default="train", help="split for files without one")
        parser.add_argument(
            "--on-error",
            choices=["skip", "reject"],
            default="skip",
            help="skip bad files (default) or reject the whole import",
        )

    def handle(self, *args: object, **o: object) -> None:
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"No project '{o['project']}'.")
        archive: Path = o["archive"]  # type: ignore[assignment]
        manifest: Path | None = o["manifest"]  # type: ignore[assignment]
        if not archive.is_file():
            raise CommandError(f"{archive} is not a file.")
        try:
            with archive.open("rb") as fh:
                mf = manifest.open("rb") if manifest else None
                try:
                    job = services.dataset_import_start(
                        project=project,
                        archive_file=File(fh, name=archive.name),
                        manifest_file=File(mf, name=manifest.name) if mf and manifest else None,
                        options=services.ImportOptions(
                            dataset_name=str(o["name"]),
                            default_split=str(o["split"]),
                            on_error=str(o["on_error"]),
                        ),
                        created_by=None,
                        run_now=True,
                    )
                finally:
                    if mf:
                        mf.close()
        except ValidationError as exc:
            raise CommandError(
                str(exc.message_dict if hasattr(exc, "error_dict") else exc)
            ) from exc
        update, close = progress_bar(f"import {archive.name}")
        try:
            report = services.dataset_import_run(job=job, progress=update)
        finally:
            close()
        self.stdout.write(
            f"job {job.pk}: {job.status}; accepted {report.get('accepted', 0)}, "
            f"written {report.get('written', 0)}, errors {len(report.get('errors', []))}"
        )
        for err in report.get("errors", [])[:50]:
            self.stdout.write(f"  {err['path']}: {err['code']}: {err['message']}")
        if job.status == "failed":
            raise CommandError(job.error)
