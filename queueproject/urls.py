"""URLs: health checks, the admin, django-rq's dashboard (read-only, see jobs.rq_dashboard), the API and pages."""

from django.contrib import admin
from django.urls import include, path, re_path

from jobs import health, metrics, rq_dashboard

urlpatterns = [
    re_path(r"^healthz/?$", health.healthz, name="healthz"),
    re_path(r"^readyz/?$", health.readyz, name="readyz"),
    re_path(r"^metrics/?$", metrics.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("django-rq/", include((rq_dashboard.urlpatterns, "django_rq"))),
    path("api/", include("jobs.api.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("jobs.urls")),
]
