"""REST API views: parse input, check access, call one service or selector, serialize."""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import analysis, selectors, services
from annotations import permissions as access
from annotations.api import serializers as s
from annotations.api.parsers import BoundedJSONParser
from annotations.api.query_params import StrictFilterSet, refuse_empty
from annotations.api.strict import StrictInput
from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    InstanceComment,
    Job,
    ModelVersion,
    Prediction,
    Role,
    Split,
)
from annotations.services import comments as comment_services


class ProjectListCreate(generics.ListAPIView):
    serializer_class = s.ProjectOutput
    filterset_fields = ["slug"]

    def get_queryset(self):
        return access.projects_for_user(self.request.user).order_by("name")

    @extend_schema(request=s.ProjectInput, responses={201: s.ProjectOutput})
    def post(self, request: Request) -> Response:
        data = s.ProjectInput(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(created_by=request.user, **data.validated_data)
        return Response(s.ProjectOutput(project).data, status=status.HTTP_201_CREATED)


class ProjectDetail(APIView):
    @extend_schema(responses=s.ProjectOutput)
    def get(self, request: Request, project_id: int) -> Response:
        return Response(s.ProjectOutput(access.access_project_by_id(request.user, project_id)).data)


class ProjectMembers(APIView):
    @extend_schema(request=s.MembershipInput, responses={201: None})
    def post(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        data = s.MembershipInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(username=data.validated_data["username"]).first()
        if user is None:
            return Response({"username": ["No such user."]}, status=status.HTTP_400_BAD_REQUEST)
        services.membership_add(project=project, user=user, role=data.validated_data["role"])
        return Response(status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: s.MemberOutput(many=True)})
    def get(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        members = project.memberships.select_related("user").order_by("user__username", "role")
        return Response(s.MemberOutput(members, many=True).data)


class ProjectMember(APIView):
    """Remove a member: ``DELETE .../members/{username}/`` takes every role away,
    ``?role=expert`` one of them. Their access ends at once; the tasks they hold go back to
    the pool; their submitted reviews stay."""

    @extend_schema(
        parameters=[OpenApiParameter("role", str, required=False, enum=list(Role.values))],
        responses={200: s.MemberRemovedOutput},
    )
    def delete(self, request: Request, project_id: int, username: str) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        refuse_empty(request.query_params, ["role"])
        user = get_user_model().objects.filter(username=username).first()
        if user is None or not project.memberships.filter(user=user).exists():
            raise Http404("No member with that username.")
        roles = services.membership_remove(
            project=project, user=user, role=request.query_params.get("role") or None
        )
        return Response({"username": username, "removed_roles": roles})


class DatasetList(generics.ListAPIView):
    queryset = Dataset.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = s.DatasetOutput
    filterset_fields = ["name"]

    def get_queryset(self):
        project = access.access_project_by_id(
            self.request.user, self.kwargs["project_id"], allowed=access.READ_DETAILS
        )
        return selectors.dataset_list(project=project)


class DatasetImport(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": s.DatasetImportInput}, responses={202: s.JobOutput}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        data = s.DatasetImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        job = services.dataset_import_start(
            project=project,
            archive_file=v["archive"],
            manifest_file=v.get("manifest"),
            options=services.ImportOptions(
                dataset_name=v["name"], default_split=v["default_split"], on_error=v["on_error"]
            ),
            created_by=request.user,
        )
        return _accepted(job)


class InstanceFilter(StrictFilterSet):
    class Meta:
        model = Instance
        fields = ["split", "label"]


class InstanceList(generics.ListAPIView):
    queryset = Instance.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = s.InstanceOutput
    filterset_class = InstanceFilter

    def get_queryset(self):
        dataset = access.access_dataset_by_id(self.request.user, self.kwargs["dataset_id"])
        return selectors.instance_list(dataset=dataset)


class InstanceDetail(APIView):
    @extend_schema(responses=s.InstanceOutput)
    def get(self, request: Request, instance_id: int) -> Response:
        return Response(
            s.InstanceOutput(access.access_instance_by_id(request.user, instance_id)).data
        )


class InstanceImage(APIView):
    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, instance_id: int) -> FileResponse:
        instance = access.access_instance_by_id(request.user, instance_id)
        return FileResponse(instance.image.open("rb"))


class ModelVersionListRegister(generics.ListAPIView):
    queryset = ModelVersion.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = s.ModelVersionOutput
    filterset_fields = ["kind", "status"]
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    def get_queryset(self):
        project = access.access_project_by_id(
            self.request.user, self.kwargs["project_id"], allowed=access.READ_DETAILS
        )
        return selectors.model_version_list(project=project)

    @extend_schema(
        request={"multipart/form-data": s.ModelRegisterInput}, responses={201: s.ModelVersionOutput}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        data = s.ModelRegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        mv, job = services.model_version_register(
            project=project,
            spec=_spec_input(v, kind=v["kind"]),
            weights_file=v["weights"],
            created_by=request.user,
        )
        body = s.ModelVersionOutput(mv).data | {"job": s.JobOutput(job).data}
        return Response(body, status=status.HTTP_201_CREATED)


class PredictionsImport(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": s.PredictionsImportInput}, responses={202: s.JobOutput}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
        data = s.PredictionsImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        mv, job = services.predictions_import_start(
            project=project,
            spec=_spec_input(v, kind="predictions_only"),
            predictions_file=v["predictions"],
            saliency_file=v.get("saliency"),
            created_by=request.user,
        )
        return _accepted(job, model_version=s.ModelVersionOutput(mv).data)


def _spec_input(v: dict, *, kind: str) -> services.ModelSpecInput:
    return services.ModelSpecInput(
        name=v["name"],
        kind=kind,
        input_size=v["input_size"],
        mean=v["mean"],
        std=v["std"],
        label_order=v.get("label_order") or (),
        architecture=v.get("architecture", ""),
        notes=v.get("notes", ""),
    )


def _accepted(job: Job, **extra: object) -> Response:
    body = s.JobOutput(job).data | extra
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ModelVersionDetail(APIView):
    @extend_schema(responses=s.ModelVersionOutput)
    def get(self, request: Request, model_version_id: int) -> Response:
        mv = access.access_model_version_by_id(request.user, model_version_id)
        return Response(s.ModelVersionOutput(mv).data)


class PredictionFilter(StrictFilterSet):
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte")
    max_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="lte")
    true_label = django_filters.CharFilter(field_name="instance__label")
    split = django_filters.ChoiceFilter(field_name="instance__split", choices=Split.choices)

    class Meta:
        model = Prediction
        fields = ["label"]


class PredictionList(generics.ListAPIView):
    queryset = Prediction.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = s.PredictionOutput
    filterset_class = PredictionFilter

    def get_queryset(self):
        mv = access.access_model_version_by_id(self.request.user, self.kwargs["model_version_id"])
        return selectors.prediction_list(model_version=mv)


class JobList(generics.ListAPIView):
    queryset = Job.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = s.JobOutput
    filterset_fields = ["kind", "status"]

    def get_queryset(self):
        project = access.access_project_by_id(self.request.user, self.kwargs["project_id"])
        return selectors.job_list(project=project)


class JobDetail(APIView):
    @extend_schema(responses=s.JobOutput)
    def get(self, request: Request, job_id: int) -> Response:
        return Response(s.JobOutput(access.access_job_by_id(request.user, job_id)).data)


class ArchitectureList(APIView):
    @extend_schema(responses={200: {"type": "array", "items": {"type": "string"}}})
    def get(self, request: Request) -> Response:
        # torchvision is imported here, not at module level: web workers stay small.
        from explain_worker.model_loading import list_architectures

        return Response(list_architectures())


def _settings(v: dict) -> dict:
    return {k: v[k] for k in services.explanations.PARAM_FIELDS if k in v}


class ExplanationListRequest(generics.ListAPIView):
    """GET: the model version's explanations. POST: one instance on demand: 200 with the
    cached explanation, or 202 with the job computing it (ask again when it is done)."""

    queryset = Explanation.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = s.ExplanationOutput
    filterset_fields = ["method", "target", "instance", "settings_key"]

    def get_queryset(self):
        mv = access.access_model_version_by_id(self.request.user, self.kwargs["model_version_id"])
        return selectors.explanation_list(model_version=mv)

    @extend_schema(
        request=s.ExplanationRequestInput,
        responses={200: s.ExplanationOutput, 202: s.JobOutput},
    )
    def post(self, request: Request, model_version_id: int) -> Response:
        # Queueing computation is a scientist's act; approvers and viewers read the maps.
        mv = access.access_model_version_by_id(
            request.user, model_version_id, allowed=access.MANAGE
        )
        data = s.ExplanationRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        spec = services.explanations.explain_spec(
            model_version=mv, method=v["method"], target=v.get("target"), params=_settings(v)
        )
        instance = Instance.objects.filter(pk=v["instance"]).first()
        if instance is None:
            return Response({"instance": ["No such instance."]}, status=400)
        cached, job = services.explanations.explanation_request(
            model_version=mv, instance=instance, spec=spec, created_by=request.user
        )
        if cached is not None:
            return Response(s.ExplanationOutput(cached).data)
        return _accepted(job)


class ExplainBulk(APIView):
    @extend_schema(request=s.ExplainBulkInput, responses={202: s.JobOutput})
    def post(self, request: Request, model_version_id: int) -> Response:
        mv = access.access_model_version_by_id(
            request.user, model_version_id, allowed=access.MANAGE
        )
        data = s.ExplainBulkInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        spec = services.explanations.explain_spec(
            model_version=mv, method=v["method"], target=v.get("target"), params=_settings(v)
        )
        job = services.explanations.explanations_start(
            model_version=mv,
            spec=spec,
            created_by=request.user,
            split=v.get("split"),
            instance_ids=v.get("instance_ids"),
        )
        return _accepted(job)


class ExplanationDetail(APIView):
    @extend_schema(responses=s.ExplanationOutput)
    def get(self, request: Request, explanation_id: int) -> Response:
        exp = access.access_explanation_by_id(request.user, explanation_id)
        return Response(s.ExplanationOutput(exp).data)


class ExplanationFile(APIView):
    """The raw map (.npz, float16 under key "attribution"), the overlay PNG with its legend,
    or the thumbnail. Overlay and thumbnail are rendered on first request and kept."""

    @extend_schema(
        operation_id="explanations_file_retrieve",
        # raw: the .npz map; overlay: a PNG; thumbnail: a WebP.
        responses={
            (200, "application/octet-stream"): bytes,
            (200, "image/png"): bytes,
            (200, "image/webp"): bytes,
        },
    )
    def get(self, request: Request, explanation_id: int, kind: str) -> FileResponse:
        exp = access.access_explanation_by_id(request.user, explanation_id)
        if kind == "raw":
            name = exp.raw.name
        else:
            name = services.explanations.explanation_rendering(explanation=exp, kind=kind)
        return FileResponse(exp.raw.storage.open(name, "rb"))


# --- Instance comments --------------------------------------------------------------------
# Imported here rather than at the top so this section can be appended without touching the
# module's head while other work edits it; safe to hoist.


class InstanceCommentOutput(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(read_only=True, slug_field="username")

    class Meta:
        model = InstanceComment
        fields = ["id", "instance", "author", "body", "created_at"]


class InstanceCommentInput(StrictInput):
    # Length and blankness are the service's rules (comments.comment_add), not the parser's.
    body = serializers.CharField(allow_blank=True, trim_whitespace=False)


class InstanceComments(generics.ListAPIView):
    """GET: the instance's discussion thread, oldest first. POST: add a comment (400 naming
    ``body`` when it is empty or too long). Scientists and approvers."""

    queryset = InstanceComment.objects.none()  # for the schema: get_queryset() needs the URL
    serializer_class = InstanceCommentOutput

    def get_queryset(self):
        instance = access.access_instance_by_id(self.request.user, self.kwargs["instance_id"])
        return analysis.instance_comments(instance=instance)

    @extend_schema(request=InstanceCommentInput, responses={201: InstanceCommentOutput})
    def post(self, request: Request, instance_id: int) -> Response:
        instance = access.access_instance_by_id(request.user, instance_id)
        data = InstanceCommentInput(data=request.data)
        data.is_valid(raise_exception=True)
        comment = comment_services.comment_add(
            instance=instance, author=request.user, body=data.validated_data["body"]
        )
        return Response(InstanceCommentOutput(comment).data, status=status.HTTP_201_CREATED)
