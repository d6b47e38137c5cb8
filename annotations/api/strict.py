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
        return super().to_internal_value(data)
