from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotations.api import review_table_views as rtv
from annotations.api import review_views as rv
from annotations.api import views
from annotations.api.token_views import TokenObtain

urlpatterns = [
    path("auth/token/", TokenObtain.as_view(), name="api-token"),
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
    path(
        "projects/<int:project_id>/members/<str:username>/",
        views.ProjectMember.as_view(),
        name="api-project-member",
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
        "instances/<int:instance_id>/comments/",
        views.InstanceComments.as_view(),
        name="api-instance-comments",
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
    path("projects/<int:project_id>/rounds/", rv.RoundListCreate.as_view(), name="api-rounds"),
    path(
        "projects/<int:project_id>/rounds/preview/",
        rv.RoundPreview.as_view(),
        name="api-round-preview",
    ),
    path("rounds/<int:round_id>/", rv.RoundDetail.as_view(), name="api-round-detail"),
    path("rounds/<int:round_id>/experts/", rv.RoundExperts.as_view(), name="api-round-experts"),
    path("rounds/<int:round_id>/close/", rv.RoundClose.as_view(), name="api-round-close"),
    path("rounds/<int:round_id>/progress/", rv.RoundProgress.as_view(), name="api-round-progress"),
    path("rounds/<int:round_id>/export/", rv.RoundExport.as_view(), name="api-round-export"),
    # A round's submitted reviews, filtered and sorted: JSON pages, or CSV (review_table_views).
    path(
        "rounds/<int:round_id>/reviews/", rtv.RoundReviewTable.as_view(), name="api-round-reviews"
    ),
    path(
        "rounds/<int:round_id>/reviews.csv",
        rtv.RoundReviewCSV.as_view(),
        {"format": "csv"},
        name="api-round-reviews-csv",
    ),
    path("rounds/<int:round_id>/tasks/next", rv.TaskNext.as_view(), name="api-task-next"),
    path("tasks/<int:task_id>/", rv.TaskDetail.as_view(), name="api-task-detail"),
    path("tasks/<int:task_id>/heartbeat", rv.TaskHeartbeat.as_view(), name="api-task-heartbeat"),
    path("tasks/<int:task_id>/skip", rv.TaskSkip.as_view(), name="api-task-skip"),
    path("tasks/<int:task_id>/draft", rv.TaskDraft.as_view(), name="api-task-draft"),
    path(
        "tasks/<int:task_id>/expectation", rv.TaskExpectation.as_view(), name="api-task-expectation"
    ),
    path("tasks/<int:task_id>/verdict", rv.TaskVerdict.as_view(), name="api-task-verdict"),
    path("tasks/<int:task_id>/image", rv.TaskImage.as_view(), name="api-task-image"),
    re_path(
        r"^tasks/(?P<task_id>\d+)/saliency/(?P<kind>raw|overlay)$",
        rv.TaskSaliency.as_view(),
        name="api-task-saliency",
    ),
    path("reviews/", rv.ReviewList.as_view(), name="api-reviews"),
    path("reviews/<int:review_id>/", rv.ReviewDetail.as_view(), name="api-review-detail"),
    path("jobs/<int:job_id>/", views.JobDetail.as_view(), name="api-job-detail"),
    path("jobs/<int:job_id>/retry/", rtv.JobRetry.as_view(), name="api-job-retry"),
]
