import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.management.progress import follow_job
from annotations.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Compute attribution maps for a model version (Saliency, IntegratedGradients 'ig', "
        "GradCAM, Occlusion) on a worker, following the job with a progress bar."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-version", type=int, required=True, help="model version id")
        parser.add_argument(
            "--method",
            required=True,
            help="saliency | ig (integrated_gradients) | gradcam | occlusion",
        )
        parser.add_argument("--target", help="class to explain (default: the predicted class)")
        parser.add_argument("--split", help="only this split (train, test, deployment)")
        parser.add_argument("--instances", help="comma-separated instance ids")
        parser.add_argument("--n-steps", type=int, help="IntegratedGradients steps")
        parser.add_argument("--internal-batch-size", type=int)
        parser.add_argument("--layer", help="GradCAM layer (default: last conv block)")
        parser.add_argument("--window", type=int, help="Occlusion window")
        parser.add_argument("--stride", type=int, help="Occlusion stride")
        parser.add_argument(
            "--in-process", action="store_true", help="compute here instead of on a worker"
        )
        parser.add_argument("--no-wait", action="store_true", help="queue and return")

    def handle(self, *args: object, **o: object) -> None:
        mv = ModelVersion.objects.filter(pk=o["model_version"]).first()
        if mv is None:
            raise CommandError(f"No model version {o['model_version']}.")
        settings = {
            k: o[k]
            for k in ("n_steps", "internal_batch_size", "layer", "window", "stride")
            if o[k] is not None
        }
        instances = (
            [int(x) for x in str(o["instances"]).split(",") if x] if o["instances"] else None
        )
        try:
            spec = services.explanations.explain_spec(
                model_version=mv, method=str(o["method"]), target=o["target"], params=settings
            )
            job = services.explanations.explanations_start(
                model_version=mv,
                spec=spec,
                created_by=None,
                split=o["split"],
                instance_ids=instances,
                enqueue=not o["in_process"],
            )
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from exc
        self.stdout.write(f"explain job {job.pk}: {job.total} instances, {spec.method}")
        if o["in_process"]:
            from explain_worker.tasks import run_job_here

            run_job_here(job.pk)
        if not o["no_wait"]:
            job = follow_job(job.pk)
            self.stdout.write(f"job {job.pk}: {job.status} {job.done}/{job.total}")
            if job.status == "failed":
                raise CommandError(job.error)
