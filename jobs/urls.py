from django.urls import path

from jobs import pages, views

app_name = "jobs"

urlpatterns = [
    path("", pages.home, name="home"),
    path("jobs/", pages.jobs_page, name="page"),
    path("jobs/cards/", pages.job_cards, name="cards"),
    path("jobs/events/", pages.events, name="events"),
    path("jobs/create/", pages.job_create, name="create"),
    path("jobs/form/", pages.job_form, name="form"),
    path("jobs/<uuid:job_id>/", pages.job_detail, name="detail"),
    path("jobs/<uuid:job_id>/act/", pages.job_act, name="act"),
    path("reports/<uuid:job_id>.csv", views.report_download, name="report-download"),
]
