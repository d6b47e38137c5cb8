"""The login page, throttled like the token endpoint (per client address and per username,
``annotations.api.throttling``): a refused attempt shows the form again with how long to
wait, answers 429, and does not check the password."""

from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse

from annotations.api.throttling import login_refused_for


class ThrottledLoginView(LoginView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = login_refused_for(request)
        if wait is None:
            return super().post(request, *args, **kwargs)
        message = f"Too many login attempts; try again in {math.ceil(wait)} seconds."
        # An unbound form: a bound one would try the password when its errors are read.
        context = self.get_context_data(form=self.get_form_class()(request), throttled=message)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(math.ceil(wait))
        return response
