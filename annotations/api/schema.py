"""drf-spectacular postprocessing: the error answers every operation can give, and output
fields that some callers do not get.

The views document their successes; the errors come from a handful of places shared by all
of them (authentication, the ``access_*_by_id`` helpers, DRF's parsers, the exception
handler in ``annotations.api.errors``), so they are added here, in one pass over the
schema, where they can occur:

- 400 ``{field: [messages]}`` (``detail`` for a body that cannot be parsed) for operations
  that take a body or query parameters;
- 401 without valid credentials, everywhere; 403 for a role that may not, everywhere but the
  token endpoint; 404 for an object that does not exist or is in another project
  (operations with a path parameter) and for a page past the last one (lists);
- 409 ``{field: [message]}`` where a write can clash with a task's or job's state
  (``CONFLICTS``); 415 for a body in a media type the operation does not take; 422 for an
  ``Idempotency-Key`` reused on another request; 429 with ``Retry-After`` on the throttled
  token endpoint.
"""

from __future__ import annotations

from typing import Any

from annotations.api.review_serializers import RoundOutput

# Operations whose writes answer 409 naming `round`, `lease`, `phase`, `status` or `detail`.
CONFLICTS = {
    ("post", "/api/rounds/{round_id}/tasks/next"),
    ("post", "/api/tasks/{task_id}/heartbeat"),
    ("post", "/api/tasks/{task_id}/skip"),
    ("put", "/api/tasks/{task_id}/draft"),
    ("post", "/api/tasks/{task_id}/expectation"),
    ("post", "/api/tasks/{task_id}/verdict"),
    ("patch", "/api/reviews/{review_id}/"),
    ("post", "/api/jobs/{job_id}/retry/"),
}
IDEMPOTENT = {
    ("post", "/api/tasks/{task_id}/expectation"),
    ("post", "/api/tasks/{task_id}/verdict"),
}
TOKEN_PATH = "/api/auth/token/"
# Output fields left out for some callers: component name -> field names.
OPTIONAL_OUTPUT_FIELDS = {
    # Left out for the round's experts (how the sample was drawn, who else reviews).
    "RoundOutput": RoundOutput.HIDDEN_FROM_EXPERTS,
}
# The URL fixes the format of these; DRF's `format` query parameter does not apply.
FIXED_FORMAT_PATHS = {"/api/rounds/{round_id}/reviews.csv"}

FIELD_ERRORS = {
    "type": "object",
    "description": "Each offending field (or query parameter) with its messages; `detail` "
    "for a body that cannot be parsed, `non_field_errors` for a rule over several fields.",
    "additionalProperties": {
        "anyOf": [
            {"type": "array", "items": {}},
            {"type": "string"},
            {"type": "object"},
        ]
    },
}
CONFLICT_ERROR = {
    "type": "object",
    "description": "The state that clashes (`phase`, `lease`, `round`, `status` or "
    "`detail`) with one message.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
DETAIL_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}

_ERRORS = {
    400: ("FieldErrors", "Bad input: each offending field or parameter is named."),
    401: ("Detail", "No valid credentials (a missing, unknown or expired token)."),
    403: ("Detail", "Your role in the project may not do this."),
    404: ("Detail", "No such object, or it is in a project you are not a member of."),
    409: ("Conflict", "The request clashes with the current state, which is named."),
    415: ("Detail", "The body's media type is not one this operation takes."),
    422: ("FieldErrors", "This Idempotency-Key was used for another request."),
    429: ("Detail", "Too many attempts; retry after Retry-After seconds."),
}
_COMPONENTS = {"FieldErrors": FIELD_ERRORS, "Conflict": CONFLICT_ERROR, "Detail": DETAIL_ERROR}
_LIST_MARKER = "page"


def _error_codes(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    parameters = operation.get("parameters", [])
    in_path = any(p["in"] == "path" for p in parameters)
    in_query = any(p["in"] == "query" for p in parameters)
    body = "requestBody" in operation
    codes = [401]
    if path != TOKEN_PATH:
        codes.append(403)
    if body or in_query:
        codes.append(400)
    if in_path or any(p["in"] == "query" and p["name"] == _LIST_MARKER for p in parameters):
        codes.append(404)
    if (method, path) in CONFLICTS:
        codes.append(409)
    if body:
        codes.append(415)
    if (method, path) in IDEMPOTENT:
        codes.append(422)
    if path == TOKEN_PATH:
        codes += [400, 429]
    return sorted(set(codes))


def _response(code: int) -> dict[str, Any]:
    component, description = _ERRORS[code]
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
    }
    if code == 429:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
        }
    return response


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (``SPECTACULAR_SETTINGS``); see the module."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in _COMPONENTS.items():
        schemas.setdefault(name, schema)
    for name, fields in OPTIONAL_OUTPUT_FIELDS.items():
        component = schemas.get(name)
        if component and "required" in component:
            component["required"] = [f for f in component["required"] if f not in fields]
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if path in FIXED_FORMAT_PATHS:
                operation["parameters"] = [
                    p
                    for p in operation.get("parameters", [])
                    if not (p["in"] == "query" and p["name"] == "format")
                ]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] == _LIST_MARKER:
                    parameter["schema"]["minimum"] = 1  # query_params.StrictPageNumberPagination
            responses = operation.setdefault("responses", {})
            for code in _error_codes(path, method, operation):
                existing = responses.get(str(code))
                if existing is None or "content" not in existing:
                    description = (existing or {}).get("description")
                    responses[str(code)] = _response(code)
                    if description:
                        responses[str(code)]["description"] = description
    return result
