"""The API's OpenAPI schema and its documentation pages, for users who are logged in.

Who may read them is drf-spectacular's `SERVE_PERMISSIONS` setting (any authenticated
user), with the API's own authentication (a token or the session). The schema answers
a refusal as every API endpoint does, JSON with a `detail`, whatever format it was asked
in; the documentation pages (Swagger UI, Redoc) are for people in a browser, so one who
is not logged in is sent to the login page and comes back once logged in.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.exceptions import NotAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response


class SchemaApi(SpectacularAPIView):
    def handle_exception(self, exc: Exception) -> Response:
        # The error as JSON, not in the YAML or OpenAPI format the schema itself was asked in.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class _LoginFirst:
    """A documentation page: a visitor who is not logged in is sent to the login page."""

    request: Any

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, NotAuthenticated):
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)  # type: ignore[misc]


class SwaggerPage(_LoginFirst, SpectacularSwaggerView):
    pass


class RedocPage(_LoginFirst, SpectacularRedocView):
    pass
