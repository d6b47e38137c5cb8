"""``POST /api/auth/token/``: DRF's token view with login throttles (per address and per
username, ``annotations.api.throttling``), token expiry (a token older than
``TOKEN_LIFETIME_DAYS`` is replaced by a new one) and the API's bounded JSON parser (a body
nested too deeply is a 400, not a 500)."""

from __future__ import annotations

from typing import Any

from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from annotations.api.authentication import token_expired
from annotations.api.parsers import BoundedJSONParser
from annotations.api.throttling import LOGIN_THROTTLES


class TokenObtain(ObtainAuthToken):
    parser_classes = (FormParser, MultiPartParser, BoundedJSONParser)
    throttle_classes = LOGIN_THROTTLES

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        if token_expired(token):
            token.delete()
            token = Token.objects.create(user=user)
        return Response({"token": token.key})
