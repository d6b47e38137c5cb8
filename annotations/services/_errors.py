from __future__ import annotations

from django.core.exceptions import ValidationError


def field_error(field: str, message: str) -> ValidationError:
    """A validation error the API turns into 400 {field: [message]}."""
    return ValidationError({field: [message]})
