"""``Idempotency-Key`` support: a retried POST returns the first response instead of acting
twice.

The happy path costs one INSERT and no lookup: the view runs, and its response is stored in
the same transaction under the unique (user, key). A retry either fails against the state
the first request left (a submitted task answers 409) or runs again and then collides on the
unique key, which rolls its transaction back; both then replay the stored response. A
retry racing the original waits on the row lock or the unique key, so it replays too.
Precondition: the wrapped view's effects are all in the database transaction (anything
else, such as e-mail, goes through ``transaction.on_commit``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache, wraps
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from annotations.models import IdempotencyRecord
from annotations.prepared import Insert

HEADER = "HTTP_IDEMPOTENCY_KEY"
OWN_TRANSACTION = "annotations.idempotent_transaction"


def request_transaction(request: Request) -> transaction.Atomic:
    """The request's one transaction: inside ``idempotent`` its block, joined without a
    savepoint (the wrapper rolls back whole on any error, so a savepoint would only cost two
    statements), else a new ``atomic`` block."""
    return transaction.atomic(savepoint=not request.META.get(OWN_TRANSACTION, False))


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    @wraps(view)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.META.get(HEADER, "").strip()
        if not key:
            return view(self, request, *args, **kwargs)
        if len(key) > 200:
            return Response({"Idempotency-Key": ["At most 200 characters."]}, status=400)
        try:
            with transaction.atomic():
                request.META[OWN_TRANSACTION] = True
                response = view(self, request, *args, **kwargs)
                if 200 <= response.status_code < 300:
                    _record_insert().run(
                        user_id=request.user.pk,
                        key=key,
                        method=request.method,
                        path=request.path,
                        status_code=response.status_code,
                        body=_jsonable(response.data),
                        created_at=timezone.now(),
                    )
        except Exception:
            # The key was used before (unique-key clash), or this is a retry failing against
            # the state its first attempt left: answer with the first response.
            stored = _stored(request, key)
            if stored is None:
                raise
            return stored
        if not 200 <= response.status_code < 300:
            return _stored(request, key) or response
        return response

    return wrapper


@cache
def _record_insert() -> Insert:
    # Every submit with a key writes one: a prepared statement (annotations.prepared).
    return Insert(
        IdempotencyRecord, ("user", "key", "method", "path", "status_code", "body", "created_at")
    )


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
