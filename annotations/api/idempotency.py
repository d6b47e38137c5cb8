"""``Idempotency-Key`` support: a retried POST returns the first response instead of acting
twice. The record is written in the same transaction as the action, so a retry that races
the original waits on the unique key and then replays the stored response."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from annotations.models import IdempotencyRecord

HEADER = "HTTP_IDEMPOTENCY_KEY"


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    @wraps(view)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.META.get(HEADER, "").strip()
        if not key:
            return view(self, request, *args, **kwargs)
        if len(key) > 200:
            return Response({"Idempotency-Key": ["At most 200 characters."]}, status=400)
        stored = _stored(request, key)
        if stored is not None:
            return stored
        try:
            with transaction.atomic():
                response = view(self, request, *args, **kwargs)
                if 200 <= response.status_code < 300:
                    IdempotencyRecord.objects.create(
                        user=request.user,
                        key=key,
                        method=request.method,
                        path=request.path,
                        status_code=response.status_code,
                        body=_jsonable(response.data),
                    )
        except IntegrityError:
            stored = _stored(request, key)
            if stored is None:
                raise
            return stored
        return response

    return wrapper


def _jsonable(data: Any) -> Any:
    # Datetimes and decimals as DRF renders them, so a replay is byte-for-byte the same JSON.
    return json.loads(json.dumps(data if data is not None else {}, cls=JSONEncoder))


def _stored(request: Request, key: str) -> Response | None:
    record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
    if record is None:
        return None
    if (record.method, record.path) != (request.method, request.path):
        return Response(
            {"Idempotency-Key": ["This key was used for another request; use a new key."]},
            status=422,
        )
    response = Response(record.body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response
