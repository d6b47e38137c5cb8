"""Projects and memberships."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils.text import slugify

from annotations.models import (
    Membership,
    Project,
    Role,
)
from annotations.services._errors import field_error

logger = logging.getLogger(__name__)


def _clean_names(values: Sequence[Any], field: str) -> list[str]:
    names = [str(v).strip() for v in values]
    if any(not n for n in names):
        raise field_error(field, "Names must not be empty.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise field_error(field, f"Duplicate names: {', '.join(duplicates)}.")
    return names


@transaction.atomic
def project_create(
    *,
    name: str,
    labels: Sequence[str],
    created_by: Any,
    slug: str = "",
    description: str = "",
    concept_vocabulary: Sequence[str] = (),
) -> Project:
    """Create a project; its creator becomes its first scientist."""
    labels = _clean_names(labels, "labels")
    if len(labels) < 2:
        raise field_error("labels", "A project needs at least two classes.")
    slug = slug or slugify(name)
    if not slug:
        raise field_error("slug", "Give a slug of letters, digits and hyphens.")
    if Project.objects.filter(slug=slug).exists():
        raise field_error("slug", f"A project with slug '{slug}' exists already.")
    project = Project.objects.create(
        name=name,
        slug=slug,
        description=description,
        labels=labels,
        concept_vocabulary=_clean_names(concept_vocabulary, "concept_vocabulary"),
        created_by=created_by,
    )
    if created_by is not None:
        Membership.objects.create(project=project, user=created_by, role=Role.SCIENTIST)
    return project


def membership_add(*, project: Project, user: Any, role: str) -> Membership:
    if role not in Role.values:
        raise field_error("role", f"Unknown role '{role}'; use one of {', '.join(Role.values)}.")
    membership, _ = Membership.objects.get_or_create(project=project, user=user, role=role)
    return membership


@transaction.atomic
def membership_remove(*, project: Project, user: Any, role: str | None = None) -> list[str]:
    """Take ``role`` (every role when None) in ``project`` away from ``user``; returns the
    roles removed. A project keeps at least one scientist.

    Access follows membership everywhere (``permissions``), so the user loses the project's
    tasks and reviews at once. Once they are no longer an expert of the project they also
    leave its rounds (no inbox entry, no digest) and the tasks they hold go back to the pool,
    their unsubmitted expectation kept in their draft as on lease expiry; their submitted
    reviews stay, since they were made while they were a member."""
    from annotations.services import reviews

    if role is not None and role not in Role.values:
        raise field_error("role", f"Unknown role '{role}'; use one of {', '.join(Role.values)}.")
    held = Membership.objects.select_for_update().filter(project=project, user=user)
    removing = held if role is None else held.filter(role=role)
    roles = sorted(removing.values_list("role", flat=True))
    if not roles:
        raise field_error(
            "role" if role else "username",
            f"{user.get_username()} has no {'role ' + repr(role) if role else 'role'} here.",
        )
    if Role.SCIENTIST in roles:
        others = Membership.objects.filter(project=project, role=Role.SCIENTIST).exclude(user=user)
        if not others.exists():
            raise field_error("role", "A project keeps at least one scientist; add another first.")
    removing.delete()
    if not Membership.objects.filter(project=project, user=user, role=Role.EXPERT).exists():
        reviews.expert_leave_project(project=project, expert=user)
    logger.info("Removed %s from project %s as %s", user.pk, project.pk, ", ".join(roles))
    return roles
