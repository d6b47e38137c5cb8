"""Navigation: the project switcher and the links each role may use in the current project."""

from __future__ import annotations

from django import template

from annotations import permissions as access
from annotations.models import Membership, Role

register = template.Library()


def _memberships(user) -> tuple[list[dict], dict[int, set[str]]]:
    """The user's projects (for the switcher, by name) and their roles in each, in one query
    for every page. Superusers hold every role in every project (``access.roles_in_project``)
    and review only where they are experts."""
    if user.is_superuser:
        projects = list(access.projects_for_user(user).order_by("name").values("pk", "name"))
        roles = {p["pk"]: set(Role.values) for p in projects}
        return projects, roles
    projects: list[dict] = []
    roles: dict[int, set[str]] = {}
    rows = Membership.objects.filter(user=user).order_by("project__name", "project_id")
    for project_id, name, role in rows.values_list("project_id", "project__name", "role"):
        if project_id not in roles:
            projects.append({"pk": project_id, "name": name})
            roles[project_id] = set()
        roles[project_id].add(role)
    return projects, roles


@register.inclusion_tag("frontend/_nav.html", takes_context=True)
def project_nav(context: template.Context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user": user, "projects": [], "current": None, "roles": set()}
    current = context.get("project")
    projects, roles_by_project = _memberships(user)
    roles = roles_by_project.get(current.pk, set()) if current is not None else set()
    if user.is_superuser:
        has_inbox = Membership.objects.filter(user=user, role=Role.EXPERT).exists()
    else:
        # Experts of a round are experts of its project (round_create checks it).
        has_inbox = any(Role.EXPERT in r for r in roles_by_project.values())
    return {
        "user": user,
        "request": request,
        "projects": projects,
        "current": current,
        "roles": roles,
        # Inbox and "My reviews" only for experts; everyone else's home is the project list.
        "has_inbox": has_inbox,
        "is_expert": Role.EXPERT in roles,
        # Setup (data, models, members) is the scientists'; other members get the overview.
        "is_scientist": Role.SCIENTIST in roles,
        "is_approver": bool(roles & {Role.APPROVER, Role.SCIENTIST}),
        # The admin lets in active staff only; anyone else following a link ends at its login.
        "can_admin": user.is_active and user.is_staff,
    }
