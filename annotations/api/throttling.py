"""Login throttles: per client address and per username, for the login page and the token
endpoint (DRF's ``SimpleRateThrottle`` on the configured cache: set ``CACHE_URL`` so all web
processes count together). A password guesser is slowed per account whatever address it
comes from, and per address whatever account it tries."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class LoginRateByAddress(SimpleRateThrottle):
    scope = "login-address"

    def get_rate(self) -> str:
        return settings.LOGIN_RATE_PER_IP

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginRateByUsername(SimpleRateThrottle):
    scope = "login-username"

    def get_rate(self) -> str:
        return settings.LOGIN_RATE_PER_USER

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        data = getattr(request, "data", None) or getattr(request, "POST", {})
        username = str(data.get("username", "") if hasattr(data, "get") else "").strip().lower()
        if not username:
            return None
        # Hashed: a cache key must be short and plain whatever a client sends as a name.
        digest = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": digest}


LOGIN_THROTTLES = (LoginRateByAddress, LoginRateByUsername)


def login_refused_for(request: Any) -> float | None:
    """For a plain Django view (the login page): None when the attempt may go on, else the
    seconds to wait. Counts the attempt like the API's throttles do."""
    for throttle_class in LOGIN_THROTTLES:
        throttle = throttle_class()
        if not throttle.allow_request(request, None):
            return throttle.wait() or 60.0
    return None
