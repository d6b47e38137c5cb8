"""REST API of review rounds, tasks and reviews."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import analysis, sampling, selectors
from annotations import permissions as access
from annotations.api import review_serializers as rs
from annotations.api.idempotency import idempotent, request_transaction
from annotations.api.parsers import BoundedJSONParser
from annotations.api.query_params import IdFilter, StrictFilterSet
from annotations.models import Review, ReviewRound, TaskStatus
from annotations.services import explanations, field_error
from annotations.services import reviews as review_services

# Bodies that are a JSON object of answers: a form post would arrive as an empty object (a
# 200 that changed nothing), so these take JSON alone and answer 415 to anything else.
JSON_ONLY = [BoundedJSONParser]
PAYLOAD_SCHEMA = {"type": "object", "description": "The task payload (see the README)."}


def _users(usernames: list[str]) -> list:
    users = list(get_user_model().objects.filter(username__in=usernames))
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise field_error("experts", f"No such user(s): {', '.join(missing)}.")
    return users


class RoundListCreate(generics.ListAPIView):
    queryset = ReviewRound.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = rs.RoundOutput
    filterset_fields = ["status", "model_version"]

    def get_queryset(self):
        project = access.access_project_by_id(self.request.user, self.kwargs["project_id"])
        return selectors.rounds_for_user(project=project, user=self.request.user).prefetch_related(
            "experts"
        )

    def get_serializer_context(self) -> dict:
        return super().get_serializer_context() | {
            "expert_only": access.is_expert_only(
                access.roles_in_project(self.request.user, self.kwargs["project_id"])
            ),
            "user_id": self.request.user.pk,
        }

    @extend_schema(request=rs.RoundInput, responses={201: rs.RoundOutput})
    def post(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        data = rs.RoundInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        mv = project.model_versions.filter(pk=v["model_version"]).first()
        if mv is None:
            raise field_error("model_version", "No model version with that id in this project.")
        review_round = review_services.round_create(
            model_version=mv,
            name=v["name"],
            description=v["description"],
            show_name_to_experts=v["show_name_to_experts"],
            sampling_strategy=v["sampling"],
            created_by=request.user,
            experts=_users(v["experts"]),
            overlap=v["overlap"],
            due_at=v.get("due_at"),
            blind_first=v["blind_first"],
            explanation_method=v["explanation_method"],
            questions=v.get("questions"),
            lease_seconds=v.get("lease_seconds"),
        )
        return Response(rs.RoundOutput(review_round).data, status=status.HTTP_201_CREATED)


class RoundPreview(APIView):
    """How many instances each part of a sampling strategy yields, before the round starts."""

    @extend_schema(request=rs.PreviewInput, responses={200: dict})
    def post(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        data = rs.PreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        mv = project.model_versions.filter(pk=data.validated_data["model_version"]).first()
        if mv is None:
            raise field_error("model_version", "No model version with that id in this project.")
        try:
            plan = sampling.plan_sample(model_version=mv, strategy=data.validated_data["sampling"])
        except sampling.SamplingError as exc:
            raise field_error(exc.field, exc.message) from exc
        return Response({"parts": plan.counts, "new": plan.new_counts, "total": plan.total})


class RoundDetail(APIView):
    @extend_schema(responses=rs.RoundOutput)
    def get(self, request: Request, round_id: int) -> Response:
        review_round = access.access_round_by_id(request.user, round_id)
        context = {
            "expert_only": access.is_expert_only(
                access.roles_in_project(request.user, review_round.project_id)
            ),
            "user_id": request.user.pk,
        }
        return Response(rs.RoundOutput(review_round, context=context).data)


class RoundExperts(APIView):
    @extend_schema(request=rs.ExpertsInput, responses={200: rs.RoundOutput})
    def post(self, request: Request, round_id: int) -> Response:
        review_round = access.access_round_by_id(request.user, round_id, allowed=access.MANAGE)
        data = rs.ExpertsInput(data=request.data)
        data.is_valid(raise_exception=True)
        review_services.round_add_experts(
            review_round=review_round, experts=_users(data.validated_data["experts"])
        )
        return Response(rs.RoundOutput(review_round).data)


class RoundClose(APIView):
    @extend_schema(request=None, responses={200: rs.RoundOutput})
    def post(self, request: Request, round_id: int) -> Response:
        review_round = access.access_round_by_id(request.user, round_id, allowed=access.MANAGE)
        review_services.round_close(review_round=review_round)
        return Response(rs.RoundOutput(review_round).data)


class RoundProgress(APIView):
    """Overall and per-expert progress. Experts see the overall figures and their own row."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, round_id: int) -> Response:
        review_round = access.access_round_by_id(request.user, round_id)
        return Response(
            analysis.round_progress_for_user(review_round=review_round, user=request.user)
        )


def _payload(task, user, review: Review | None = None) -> dict:
    # Only the review of the expert who holds the task: never another expert's judgement.
    # A review row exists only once the expectation is in (expiry and skip delete it and
    # reset expectation_at), so a task without one needs no query. A task from
    # selectors.task_in_context brings its review and the user's draft along.
    loaded = hasattr(task, "loaded_review")
    if review is None and (task.expectation_at is not None or task.status == TaskStatus.SUBMITTED):
        if loaded:
            review = task.loaded_review
        else:
            review = Review.objects.filter(task=task, expert_id=task.expert_id).first()
    draft = {}
    if task.expert_id == user.pk:
        draft = (task.loaded_draft or {}) if loaded else review_services.draft_for(task, user)
    return rs.task_payload(task, draft=draft, review=review)


class TaskNext(APIView):
    """Lease the next task of the round to the calling expert (200), or 204 when none is
    left for them. Asking again returns the same task while its lease lives."""

    @extend_schema(request=None, responses={200: PAYLOAD_SCHEMA, 204: None})
    def post(self, request: Request, round_id: int) -> Response:
        review_round = access.access_expert_round_by_id(request.user, round_id)
        task = review_services.task_next(review_round=review_round, expert=request.user)
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_payload(task, request.user))


class TaskDetail(APIView):
    @extend_schema(responses={200: PAYLOAD_SCHEMA})
    def get(self, request: Request, task_id: int) -> Response:
        task = access.access_task_by_id(request.user, task_id, own=False)
        return Response(_payload(task, request.user))


class TaskHeartbeat(APIView):
    @extend_schema(request=None, responses={200: PAYLOAD_SCHEMA})
    def post(self, request: Request, task_id: int) -> Response:
        task = access.access_task_by_id(request.user, task_id)
        task = review_services.task_heartbeat(task=task, expert=request.user)
        return Response({"id": task.pk, "lease_expires_at": task.lease_expires_at})


class TaskSkip(APIView):
    @extend_schema(request=rs.SkipInput, responses={204: None})
    def post(self, request: Request, task_id: int) -> Response:
        task = access.access_task_by_id(request.user, task_id)
        data = rs.SkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        review_services.task_skip(
            task=task, expert=request.user, reason=data.validated_data["reason"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TaskDraft(APIView):
    parser_classes = JSON_ONLY

    @extend_schema(request=dict, responses={200: dict})
    def put(self, request: Request, task_id: int) -> Response:
        task = access.access_task_by_id(request.user, task_id)
        if not isinstance(request.data, dict):
            raise field_error("draft", "Send the draft as a JSON object.")
        draft = review_services.draft_save(task=task, expert=request.user, data=dict(request.data))
        return Response({"saved_at": draft.updated_at, "data": draft.data})


class TaskExpectation(APIView):
    parser_classes = JSON_ONLY

    @extend_schema(request=dict, responses={200: PAYLOAD_SCHEMA})
    @idempotent
    def post(self, request: Request, task_id: int) -> Response:
        # One transaction (the Idempotency-Key's, if any): the task is read under its row
        # lock, so the service acts on the state checked here.
        with request_transaction(request):
            task = access.access_task_by_id(request.user, task_id, lock=True)
            review = review_services.expectation_submit(
                task=task, expert=request.user, data=request.data, locked=True
            )
            return Response(_payload(task, request.user, review=review))


class TaskVerdict(APIView):
    parser_classes = JSON_ONLY

    @extend_schema(request=dict, responses={200: rs.ReviewOutput})
    @idempotent
    def post(self, request: Request, task_id: int) -> Response:
        with request_transaction(request):  # as in TaskExpectation
            task = access.access_task_by_id(request.user, task_id, lock=True)
            review = review_services.verdict_submit(
                task=task, expert=request.user, data=request.data, locked=True
            )
            return Response(rs.review_data(review))


class TaskImage(APIView):
    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, task_id: int) -> FileResponse:
        task = access.access_task_by_id(request.user, task_id, own=False)
        return FileResponse(task.instance.image.open("rb"))


class TaskSaliency(APIView):
    """The round's saliency map of the task's instance, once it is revealed to the expert."""

    @extend_schema(
        responses={
            # raw: the .npz map; overlay: a PNG.
            (200, "application/octet-stream"): bytes,
            (200, "image/png"): bytes,
            403: OpenApiResponse(description="not revealed yet"),
        }
    )
    def get(self, request: Request, task_id: int, kind: str) -> FileResponse:
        task = access.access_task_by_id(request.user, task_id, own=False)
        if task.expert_id == request.user.pk and not rs.revealed(task):
            raise PermissionDenied("Submit your expectation first: this round is blind-first.")
        exp = rs.saliency_explanation(task, (rs.prediction_summary(task) or {}).get("label"))
        if exp is None:
            raise field_error("saliency", "The saliency map is not computed yet.")
        name = (
            exp.raw.name
            if kind == "raw"
            else explanations.explanation_rendering(explanation=exp, kind="overlay")
        )
        return FileResponse(exp.raw.storage.open(name, "rb"))


class ReviewFilter(StrictFilterSet):
    # Plain numbers, not model choices: a model-choice filter answers 400 for an id that
    # does not exist and 200 for one of another project, which told anyone which ids exist.
    # Now both give an empty list (the queryset holds only the caller's reviews).
    round = IdFilter(field_name="round_id")
    instance = IdFilter(field_name="instance_id")
    expert = IdFilter(field_name="expert_id")

    class Meta:
        model = Review
        fields = ["round", "instance", "expert", "prediction_verdict", "acceptable"]


class ReviewList(generics.ListAPIView):
    """Reviews: an expert's own; every review of their projects for scientists and approvers."""

    queryset = Review.objects.none()  # for the schema: get_queryset() needs a user
    serializer_class = rs.ReviewOutput
    filterset_class = ReviewFilter

    def get_queryset(self):
        user = self.request.user
        details = [
            p.pk
            for p in access.projects_for_user(user)
            if access.roles_in_project(user, p.pk) & access.READ_DETAILS
        ]
        from django.db.models import Q

        return Review.objects.filter(
            Q(expert=user) | Q(round__project_id__in=details), submitted_at__isnull=False
        ).order_by("id")


class ReviewDetail(APIView):
    parser_classes = JSON_ONLY

    @extend_schema(responses=rs.ReviewOutput)
    def get(self, request: Request, review_id: int) -> Response:
        return Response(rs.ReviewOutput(access.access_review_by_id(request.user, review_id)).data)

    @extend_schema(request=dict, responses=rs.ReviewOutput)
    def patch(self, request: Request, review_id: int) -> Response:
        review = access.access_review_by_id(request.user, review_id, own=True)
        review = review_services.review_edit(review=review, expert=request.user, data=request.data)
        return Response(rs.ReviewOutput(review).data)


class RoundExport(APIView):
    """Every submitted review of the round with the model's prediction: scientists and
    approvers only (an expert would learn other experts' judgements)."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, round_id: int) -> Response:
        review_round = access.access_round_by_id(
            request.user, round_id, allowed=access.READ_DETAILS
        )
        reviews = Review.objects.filter(round=review_round, submitted_at__isnull=False)
        predictions = dict(
            review_round.model_version.predictions.filter(
                instance_id__in=reviews.values("instance_id")
            ).values_list("instance_id", "label")
        )
        rows = [
            rs.ReviewOutput(r).data
            | {"predicted_label": predictions.get(r.instance_id), "ground_truth": r.instance.label}
            for r in reviews.select_related("instance")
        ]
        return Response({"round": review_round.pk, "reviews": rows})
