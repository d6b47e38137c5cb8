"""A round's submitted reviews as JSON (paginated) and CSV (streamed), and the retry of a
failed job. Scientists and approvers only: an expert would see other experts' judgements
(403), a viewer reads aggregates only (403), a non-member gets 404."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from annotations import permissions as access
from annotations import review_table
from annotations.api import serializers as s
from annotations.api.query_params import refuse_empty
from annotations.models import ReviewRound
from annotations.services import field_error
from annotations.services import jobs as job_services

# Reviews per chunk of the CSV export: one query for the rows' maps per chunk, and the
# rows of one chunk are all that is held in memory.
CSV_CHUNK = 200


class CSVRenderer(BaseRenderer):
    """Lets ``?format=csv`` and ``reviews.csv`` through DRF's content negotiation; the view
    streams the CSV itself, and error bodies are rendered as JSON (see finalize_response)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        return json.dumps(data).encode()


class _Echo:
    """A file-like object whose write returns what it is given: csv.writer formats one row
    at a time, which the response then streams."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(review_round: ReviewRound, filters: review_table.ReviewFilters) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(review_table.CSV_COLUMNS)
    rows = review_table.round_reviews(review_round, filters).iterator(chunk_size=CSV_CHUNK)
    for chunk in review_table.in_chunks(rows, CSV_CHUNK):
        review_table.attach_saliency(chunk, review_round)
        for review in chunk:
            yield writer.writerow(review_table.csv_values(review_table.review_row(review, filters)))


FILTER_PARAMETERS = [
    OpenApiParameter("verdict", str, description="a prediction verdict"),
    OpenApiParameter("acceptable", str, enum=list(review_table.ACCEPTABLE_VALUES)),
    OpenApiParameter("expert", str, description="username of one of the round's experts"),
    OpenApiParameter("true_label", str),
    OpenApiParameter("expected_label", str),
    OpenApiParameter("predicted_label", str),
    OpenApiParameter(
        "sort",
        str,
        description="submitted, expert, severity, time, instance, verdict, expected_label; "
        "- first for descending (default -submitted)",
    ),
]


FILTER_NAMES = [p.name for p in FILTER_PARAMETERS]


class RoundReviewTable(APIView):
    """GET /api/rounds/{id}/reviews/: the round's submitted reviews, filtered and sorted,
    ``review_table.PAGE_SIZE`` a page (``?page=``). With ``?format=csv`` (or at
    ``reviews.csv``) every matching review as CSV, streamed."""

    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any):
        # An error of a CSV request (400, 403, 404) answers in JSON, as every other error.
        renderer = getattr(request, "accepted_renderer", None)
        if isinstance(response, Response) and isinstance(renderer, CSVRenderer):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="rounds_reviews_table",
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("page", OpenApiTypes.INT, description="1, 2, ..."),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="a page of rows, or CSV"),
            400: OpenApiResponse(description="a bad filter, sort or page, named"),
        },
    )
    def get(self, request: Request, round_id: int, format: str | None = None) -> Any:
        review_round = access.access_round_by_id(
            request.user, round_id, allowed=access.READ_DETAILS
        )
        # Empty values mean "any" on the page's form (parse_review_filters); an API client
        # that sends one has a bug, and is told which parameter (as in every API list).
        refuse_empty(request.query_params, [*FILTER_NAMES, "page", "format"])
        filters = review_table.parse_review_filters(request.query_params, review_round)
        if isinstance(request.accepted_renderer, CSVRenderer):
            response = StreamingHttpResponse(
                _csv_lines(review_round, filters), content_type="text/csv; charset=utf-8"
            )
            response["Content-Disposition"] = (
                f'attachment; filename="round-{review_round.pk}-reviews.csv"'
            )
            return response
        raw_page = request.query_params.get("page", "1")
        paginator = Paginator(
            review_table.round_reviews(review_round, filters), review_table.PAGE_SIZE
        )
        try:
            number = int(raw_page)
        except ValueError:
            raise field_error("page", f"{raw_page!r} is not a page number.") from None
        if not 1 <= number <= paginator.num_pages:
            raise field_error("page", f"There are {paginator.num_pages} page(s).")
        page = paginator.page(number)
        rows = list(page.object_list)
        review_table.attach_saliency(rows, review_round)
        base = request.path

        def link(n: int | None) -> str | None:
            return None if n is None else f"{base}?{filters.querystring(page=n)}"

        return Response(
            {
                "round": review_round.pk,
                "count": paginator.count,
                "page": number,
                "pages": paginator.num_pages,
                "page_size": review_table.PAGE_SIZE,
                "next": link(page.next_page_number() if page.has_next() else None),
                "previous": link(page.previous_page_number() if page.has_previous() else None),
                "filters": filters.as_params(),
                "results": [review_table.review_row(r, filters) for r in rows],
            }
        )


class RoundReviewCSV(RoundReviewTable):
    """GET /api/rounds/{id}/reviews.csv: the same rows as the JSON, every page, as CSV."""

    @extend_schema(
        operation_id="rounds_reviews_csv",
        parameters=FILTER_PARAMETERS,
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV_COLUMNS"),
            400: OpenApiResponse(description="a bad filter or sort, named"),
        },
    )
    def get(self, request: Request, round_id: int, format: str | None = None) -> Any:
        return super().get(request, round_id, format="csv")


class JobRetry(APIView):
    """POST /api/jobs/{id}/retry/: queue a failed job again (scientists of its project);
    it computes only what is still missing. 409 for a job that has not failed."""

    @extend_schema(operation_id="jobs_retry", request=None, responses={202: s.JobOutput})
    def post(self, request: Request, job_id: int) -> Response:
        job = access.access_job_by_id(request.user, job_id, allowed=access.MANAGE)
        job = job_services.job_retry(job=job, user=request.user)
        return Response(s.JobOutput(job).data, status=status.HTTP_202_ACCEPTED)
