from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.models import Project, Role


class Command(BaseCommand):
    help = "Create a project (labels comma-separated) or add members to an existing one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--labels", default="", help="comma-separated class names")
        parser.add_argument("--concepts", default="", help="comma-separated concept vocabulary")
        parser.add_argument("--owner", help="username of the first scientist")
        parser.add_argument(
            "--member",
            action="append",
            default=[],
            help=f"username:role, role one of {', '.join(Role.values)}",
        )

    def handle(self, *args: object, **o: object) -> None:
        users = get_user_model().objects
        try:
            project = Project.objects.filter(slug=o["slug"]).first()
            if project is None:
                owner = users.get(username=o["owner"]) if o["owner"] else None
                project = services.project_create(
                    name=o["name"] or o["slug"],
                    slug=o["slug"],
                    created_by=owner,
                    labels=[x for x in str(o["labels"]).split(",") if x],
                    concept_vocabulary=[x for x in str(o["concepts"]).split(",") if x],
                )
                self.stdout.write(f"created project {project.slug} (id {project.pk})")
            for spec in o["member"]:  # type: ignore[union-attr]
                username, _, role = str(spec).partition(":")
                services.membership_add(
                    project=project, user=users.get(username=username), role=role
                )
                self.stdout.write(f"{username} is {role} in {project.slug}")
        except ValidationError as exc:
            raise CommandError(
                str(exc.message_dict if hasattr(exc, "error_dict") else exc)
            ) from exc
        except users.model.DoesNotExist as exc:
            raise CommandError(f"Unknown user: {exc}") from exc
