from __future__ import annotations

from django.core.exceptions import ValidationError


def field_error(field: str, message: str) -> ValidationError:
    """A validation error the API turns into 400 {field: [message]}."""
    return ValidationError({field: [message]})


def check_text(field: str, value: object, limit: int, *, required: bool = False) -> str:
    """Refuse free text that would not be stored exactly as sent: not a string, longer than
    ``limit`` characters (``annotations.limits``), or holding a NUL character (PostgreSQL
    text cannot). Never truncates. Returns the value."""
    from annotations import limits

    if not isinstance(value, str):
        raise field_error(field, "Give text.")
    if required and not value.strip():
        raise field_error(field, "This may not be empty.")
    if len(value) > limit:
        raise field_error(field, limits.too_long_message(limit, len(value)))
    if "\x00" in value:
        raise field_error(field, "Text may not contain the NUL character (\\x00).")
    return value
