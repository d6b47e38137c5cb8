"""Navigation: the project switcher and the links each role may use in the current project."""

from __future__ import annotations

from django import template

from annotations import permissions as access
from annotations.models import Role

register = template.Library()


@register.inclusion_tag("frontend/_nav.html", takes_context=True)
def project_nav(context: template.Context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user": user, "projects": [], "current": None, "roles": set()}
    current = context.get("project")
    roles = access.roles_in_project(user, current.pk) if current is not None else set()
    return {
        "user": user,
        "request": request,
        "projects": list(access.projects_for_user(user).order_by("name").only("id", "name")),
        "current": current,
        "roles": roles,
        "is_expert": Role.EXPERT in roles,
        "is_scientist": Role.SCIENTIST in roles,
        "reads_details": bool(roles & access.READ_DETAILS),
        "is_approver": bool(roles & {Role.APPROVER, Role.SCIENTIST}),
    }
