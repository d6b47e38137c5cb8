"""The project's members page (scientists): who holds which role, add a user by username,
take a role away. Through the same services as the API (``membership_add``,
``membership_remove``): a removed member loses access at once, the tasks they hold go back
to the pool, and a project keeps at least one scientist."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from annotations import permissions as access
from annotations import services
from annotations.models import Role


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150, label="Username")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EXPERT, label="Role")

    def clean_username(self) -> str:
        name = self.cleaned_data["username"].strip()
        if not get_user_model().objects.filter(username=name).exists():
            raise ValidationError("No user with that username; they need an account first.")
        return name


@login_required
def members_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
    form = MemberAddForm()
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "add":
            form = MemberAddForm(request.POST)
            if form.is_valid():
                user = get_user_model().objects.get(username=form.cleaned_data["username"])
                services.membership_add(project=project, user=user, role=form.cleaned_data["role"])
                messages.success(
                    request, f"{user.get_username()} is now {form.cleaned_data['role']}."
                )
                return redirect("members", project.pk)
            status = 400
        elif action == "remove":
            user = (
                get_user_model().objects.filter(username=request.POST.get("username", "")).first()
            )
            role = request.POST.get("role") or None
            if user is None:
                messages.error(request, "No such member.")
                status = 400
            else:
                try:
                    removed = services.membership_remove(project=project, user=user, role=role)
                except ValidationError as exc:
                    messages.error(request, " ".join(exc.messages))
                    status = 400
                else:
                    messages.success(
                        request,
                        f"{user.get_username()} is no longer {', '.join(removed)} in this "
                        "project; the tasks they held went back to the pool.",
                    )
                    return redirect("members", project.pk)
    members = project.memberships.select_related("user").order_by("user__username", "role")
    context = {"project": project, "members": members, "form": form}
    return render(request, "frontend/members.html", context, status=status)
