from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.api.serializers import JobOutput
from annotations.management.progress import follow_job
from annotations.models import Job


class Command(BaseCommand):
    help = "Show a job's progress; with --follow, a progress bar until it finishes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", type=int)
        parser.add_argument("--follow", action="store_true")
        parser.add_argument("--timeout", type=float, default=None)

    def handle(
        self, *args: object, job_id: int, follow: bool, timeout: float | None, **options: object
    ) -> None:
        if not Job.objects.filter(pk=job_id).exists():
            raise CommandError(f"No job {job_id}.")
        job = follow_job(job_id, timeout=timeout) if follow else Job.objects.get(pk=job_id)
        data = JobOutput(job).data
        self.stdout.write(
            f"job {job.pk} {job.kind}: {job.status} {job.done}/{job.total}"
            + (f", {data['rate_per_s']:.1f}/s" if data["rate_per_s"] else "")
            + (f", ETA {data['eta_seconds']:.0f} s" if data["eta_seconds"] else "")
        )
        if job.error:
            self.stderr.write(job.error)
        if follow and job.status == "failed":
            raise CommandError(f"job {job.pk} failed")
