"""Who may do what: Django's model permissions on Job.

A viewer (view_job) reads; creating needs add_job; retry, cancel, stop and
promote need change_job; remove needs delete_job.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import DjangoModelPermissions
from rest_framework.request import Request

from jobs import permissions


class JobPermissions(DjangoModelPermissions):
    """Model permissions, and reading needs view_job (DRF lets anyone authenticated read by default)."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
    }


class ReadJobs(JobPermissions):
    """For endpoints that only read (statistics, job types), whatever the method."""

    perm = "jobs.view_job"

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(self.perm))


class ReadSchedules(ReadJobs):
    perm = "jobs.view_schedule"


class ActOnJobs(JobPermissions):
    """Actions on jobs and queues: reading needs view_job; which permission a POST
    needs depends on the action, which the view checks with `may_act`."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method == "POST":
            return bool(request.user and request.user.is_authenticated)
        return super().has_permission(request, view)


def may_act(request: Request, action: str) -> bool:
    return permissions.may_act(request.user, action)
