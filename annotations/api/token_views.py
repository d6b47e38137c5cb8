"""``POST /api/auth/token/``: DRF's token view, with the API's bounded JSON parser (a body
nested too deeply is a 400, not a 500)."""

from __future__ import annotations

from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser

from annotations.api.parsers import BoundedJSONParser


class TokenObtain(ObtainAuthToken):
    parser_classes = (FormParser, MultiPartParser, BoundedJSONParser)
