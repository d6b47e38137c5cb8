"""Input serializers that refuse what DRF would silently drop.

DRF ignores keys a serializer does not declare: a client that sends ``"coment"`` or
``"overlapp"`` gets a 2xx and loses what it meant to send. Every input serializer of the API
derives from ``StrictInput``, which answers 400 naming each unknown key instead.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

# Keys a browser or a client library adds to a form post that are not input.
_IGNORED = frozenset({"csrfmiddlewaretoken"})


class StrictInput(serializers.Serializer):
    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields) - _IGNORED)
            if unknown:
                known = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {key: [f"Unknown field; this request takes {known}."] for key in unknown}
                )
            wrong = {
                key: [_NOT_TEXT]
                for key, field in self.fields.items()
                if key in data and not _text_as_declared(field, data[key])
            }
            if wrong:
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)


# DRF's CharField takes 12 or 1.5 for "12" or "1.5": a client that sends a number where the
# schema says string has mixed up its fields, and is told so.
_NOT_TEXT = "Not a string."


def _text_as_declared(field: serializers.Field, value: Any) -> bool:
    """False when a text field (or a list of text) is sent a number or a boolean. Multipart
    and form values are always text, so only JSON bodies can fail this."""
    if isinstance(field, serializers.ChoiceField):
        return True
    if isinstance(field, serializers.CharField):
        return value is None or isinstance(value, str)
    if isinstance(field, serializers.ListField) and isinstance(field.child, serializers.CharField):
        return not isinstance(value, list) or all(isinstance(v, str) for v in value)
    return True
