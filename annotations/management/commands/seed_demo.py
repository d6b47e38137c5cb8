from django.core.management.base import BaseCommand, CommandParser

from annotations import demo
from annotations.management.progress import follow_job


class Command(BaseCommand):
    help = (
        "Create the demo: the generated 'rooms' dataset with planted failures, a small CNN "
        "trained on it (CPU), and one user per role. A second run changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wait",
            action="store_true",
            help="follow the prediction job until a worker finishes it, then create the demo round",
        )
        parser.add_argument(
            "--small", action="store_true", help="a tiny dataset and one epoch (for smoke tests)"
        )

    def handle(self, *args: object, wait: bool, small: bool, **options: object) -> None:
        size = (
            demo.DemoSize(n_train=200, n_test=50, n_deployment=30, epochs=1)
            if small
            else demo.DemoSize()
        )
        result = demo.seed_demo(size=size, log=self.stdout.write)
        if wait and result.prediction_job is not None:
            job = follow_job(result.prediction_job.pk, timeout=600)
            self.stdout.write(f"predictions: {job.status} {job.done}/{job.total}")
            demo.ensure_round(result.project, log=self.stdout.write)
        self.stdout.write("")
        self.stdout.write(f"Demo project '{result.project.name}' (id {result.project.pk}).")
        self.stdout.write(f"Log in with any of these users, password '{demo.DEMO_PASSWORD}':")
        for username, role in demo.DEMO_USERS.items():
            self.stdout.write(f"  {username:<10} {role}")
