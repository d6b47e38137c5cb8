"""Query parameters the API refuses rather than ignores.

A client that sends ``?split=`` or ``?page=`` has a bug (an unset variable, a form field
left empty) and DRF or django-filter would answer as if the parameter were absent: a 200
with every row. The API answers 400 naming the parameter instead, as for any other bad
input, and the schema says so (``annotations.api.schema``): an empty value, a page that is
not a positive whole number or past the last page, a boolean filter that is not
``true``/``false``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import django_filters
from django import forms
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination

EMPTY = "Empty value; leave the parameter out to not filter by it."
BOOLEANS = ("true", "false")


def refuse_empty(params: Mapping[str, Any], names: Iterable[str]) -> None:
    """400 naming each of ``names`` sent with an empty (or blank) value."""
    errors = {
        name: [EMPTY] for name in names if name in params and not str(params.get(name, "")).strip()
    }
    if errors:
        raise ValidationError(errors)


# The largest id a bigint column holds: a larger one cannot exist, and SQLite fails to bind
# it (OverflowError, a 500) where PostgreSQL only compares.
MAX_ID = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(django_filters.NumberFilter):
    """An object id: a whole number from 1 to ``MAX_ID`` (400 naming the parameter
    otherwise; django-filter's NumberFilter takes 1.5 and 1e30 as decimals)."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class StrictFilterSet(django_filters.FilterSet):
    """A FilterSet whose empty values and unreadable booleans are errors (400), not "any"."""

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name, filter_ in self.filters.items():
            if name not in self.data:
                continue
            raw = str(self.data.get(name, "")).strip()
            if not raw:
                self.form.add_error(name, EMPTY)
            elif isinstance(filter_, django_filters.BooleanFilter) and raw not in BOOLEANS:
                self.form.add_error(name, "Use true or false.")
        return valid and not self.form.errors


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend; views' ``filterset_fields`` get a ``StrictFilterSet``."""

    filterset_base = StrictFilterSet


class StrictPageNumberPagination(PageNumberPagination):
    """Page numbers: a page that does not exist is a 400 naming ``page`` (empty, not a
    whole number, below 1, past the last page), like the review table's pages."""

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        raw = request.query_params.get(self.page_query_param)
        if raw is not None:
            text = raw.strip()
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise ValidationError(
                    {self.page_query_param: [f"{raw!r} is not a page number (1, 2, ...)."]}
                )
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound as exc:  # raised by DRF for an InvalidPage: past the last one
            raise ValidationError({self.page_query_param: ["There is no such page."]}) from exc

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
