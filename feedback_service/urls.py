from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.static import serve

from feedback_service.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("annotations.api.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("frontend.urls")),
]

if settings.DEBUG:
    # Local files only; production serves media from object storage or a web server.
    urlpatterns.append(
        path(
            f"{settings.MEDIA_URL.strip('/')}/<path:path>",
            serve,
            {"document_root": settings.MEDIA_ROOT},
        )
    )
