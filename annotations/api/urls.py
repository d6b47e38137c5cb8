from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from annotations.api import views

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("architectures/", views.ArchitectureList.as_view(), name="api-architectures"),
    path("projects/", views.ProjectListCreate.as_view(), name="api-projects"),
    path("projects/<int:project_id>/", views.ProjectDetail.as_view(), name="api-project-detail"),
    path(
        "projects/<int:project_id>/members/",
        views.ProjectMembers.as_view(),
        name="api-project-members",
    ),
    path("projects/<int:project_id>/datasets/", views.DatasetList.as_view(), name="api-datasets"),
    path(
        "projects/<int:project_id>/datasets/import/",
        views.DatasetImport.as_view(),
        name="api-dataset-import",
    ),
    path(
        "projects/<int:project_id>/model-versions/",
        views.ModelVersionListRegister.as_view(),
        name="api-model-versions",
    ),
    path(
        "projects/<int:project_id>/model-versions/import-predictions/",
        views.PredictionsImport.as_view(),
        name="api-predictions-import",
    ),
    path("projects/<int:project_id>/jobs/", views.JobList.as_view(), name="api-jobs"),
    path(
        "datasets/<int:dataset_id>/instances/", views.InstanceList.as_view(), name="api-instances"
    ),
    path(
        "instances/<int:instance_id>/", views.InstanceDetail.as_view(), name="api-instance-detail"
    ),
    path(
        "instances/<int:instance_id>/image/",
        views.InstanceImage.as_view(),
        name="api-instance-image",
    ),
    path(
        "model-versions/<int:model_version_id>/",
        views.ModelVersionDetail.as_view(),
        name="api-model-version-detail",
    ),
    path(
        "model-versions/<int:model_version_id>/predictions/",
        views.PredictionList.as_view(),
        name="api-predictions",
    ),
    path(
        "model-versions/<int:model_version_id>/explanations/",
        views.ExplanationListRequest.as_view(),
        name="api-explanations",
    ),
    path(
        "model-versions/<int:model_version_id>/explain/",
        views.ExplainBulk.as_view(),
        name="api-explain",
    ),
    path(
        "explanations/<int:explanation_id>/",
        views.ExplanationDetail.as_view(),
        name="api-explanation-detail",
    ),
    re_path(
        r"^explanations/(?P<explanation_id>\d+)/(?P<kind>raw|overlay|thumbnail)/$",
        views.ExplanationFile.as_view(),
        name="api-explanation-file",
    ),
    path("jobs/<int:job_id>/", views.JobDetail.as_view(), name="api-job-detail"),
]
