from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("reports/<uuid:job_id>.csv", views.report_download, name="report-download"),
]
