"""Page URLs. Each page module owns its views; every view calls the selectors, services and
access helpers the API uses (annotations.selectors / .services / .permissions)."""

from django.urls import path

from frontend import (
    approver_views,
    expert_views,
    member_views,
    my_reviews_views,
    scientist_views,
    views,
)

urlpatterns = [
    path("", views.home, name="home"),
    # Experts
    path("rounds/<int:round_id>/review/", expert_views.review_page, name="review"),
    path("reviews/mine/", my_reviews_views.my_reviews, name="my-reviews"),
    path("reviews/<int:review_id>/edit/", my_reviews_views.review_edit_page, name="review-edit"),
    # Scientists (setup, rounds, failure analysis)
    path("projects/<int:project_id>/", scientist_views.project_page, name="project"),
    path("projects/<int:project_id>/rounds/new/", scientist_views.round_new, name="round-new"),
    path("projects/<int:project_id>/members/", member_views.members_page, name="members"),
    path("rounds/<int:round_id>/", scientist_views.round_page, name="round"),
    path(
        "model-versions/<int:model_version_id>/matrix/",
        scientist_views.matrix_page,
        name="matrix",
    ),
    path("instances/<int:instance_id>/", scientist_views.instance_page, name="instance"),
    # Approvers
    path("projects/<int:project_id>/readiness/", approver_views.readiness_page, name="readiness"),
]
