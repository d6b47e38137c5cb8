from django.contrib import admin
from django.urls import include, path

from feedback_service.health import healthz
from frontend.login_views import ThrottledLoginView

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("annotations.api.urls")),
    # The login page is throttled like the token endpoint; the rest is Django's.
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("frontend.urls")),
]

# Pages answer in the app's layout, API paths in JSON (frontend/views.py); with DEBUG=1
# Django shows its debug pages instead.
handler403 = "frontend.views.permission_denied"
handler404 = "frontend.views.page_not_found"
handler500 = "frontend.views.server_error"

# No route serves MEDIA_ROOT, in any mode: every stored file (images, maps, overlays, model
# weights) goes through an API view that checks access and blind-first first.
