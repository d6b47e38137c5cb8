from django.urls import path

from frontend import views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/<int:project_id>/", views.project_page, name="project"),
]
