from django.urls import path, re_path

from jobs.api import docs, views

app_name = "jobs-api"

# A trailing slash is optional everywhere.
urlpatterns = [
    re_path(r"^jobs/?$", views.JobListApi.as_view(), name="job-list"),
    re_path(r"^jobs/stats/?$", views.JobStatsApi.as_view(), name="job-stats"),
    re_path(r"^jobs/types/?$", views.JobTypeListApi.as_view(), name="job-types"),
    re_path(r"^jobs/actions/?$", views.JobBulkActionApi.as_view(), name="job-bulk-action"),
    re_path(r"^jobs/(?P<job_id>[^/]+)/?$", views.JobDetailApi.as_view(), name="job-detail"),
    re_path(r"^jobs/(?P<job_id>[^/]+)/action/?$", views.JobActionApi.as_view(), name="job-action"),
    re_path(r"^schedules/?$", views.ScheduleListApi.as_view(), name="schedule-list"),
    re_path(r"^queues/?$", views.QueueListApi.as_view(), name="queue-list"),
    re_path(r"^queues/(?P<name>[^/]+)/pause/?$", views.QueuePauseApi.as_view(), name="queue-pause"),
    re_path(r"^queues/(?P<name>[^/]+)/resume/?$", views.QueueResumeApi.as_view(), name="queue-resume"),
    path("auth/token/", views.TokenApi.as_view(), name="token"),
    # For users who are logged in (SERVE_PERMISSIONS): see jobs.api.docs.
    path("schema/", docs.SchemaApi.as_view(), name="schema"),
    path("docs/", docs.SwaggerPage.as_view(url_name="jobs-api:schema"), name="docs"),
    path(
        "redoc/",
        docs.RedocPage.as_view(url_name="jobs-api:schema", template_name="jobs/api/redoc.html"),
        name="redoc",
    ),
]
