"""The REST API: parse, call a selector or a service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import selectors, services
from jobs.api import serializers as s
from jobs.api.pagination import JobCursorPagination, ScheduleCursorPagination
from jobs.api.permissions import ActOnJobs, JobPermissions, ReadJobs, ReadSchedules, may_act
from jobs.api.throttling import JobWriteThrottle
from jobs.models import Job, JobAudit, Schedule
from jobs.selectors import JobFilter

ERRORS: dict[int | tuple[int, str], Any] = {
    401: OpenApiResponse(s.ErrorSerializer, description="Not authenticated."),
    403: OpenApiResponse(s.ErrorSerializer, description="Not allowed."),
    503: OpenApiResponse(s.ErrorSerializer, description="Redis or the database is unreachable; see Retry-After."),
}
WRITE_ERRORS: dict[int | tuple[int, str], Any] = {
    **ERRORS,
    400: OpenApiResponse(s.ValidationErrorSerializer, description="Invalid request, with field errors."),
    429: OpenApiResponse(s.ErrorSerializer, description="Too many writes; see Retry-After."),
}
NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such job.")}
BAD_ID = {400: OpenApiResponse(s.ValidationErrorSerializer, description="Malformed job id.")}
BAD_PAGE = {400: OpenApiResponse(s.ValidationErrorSerializer, description="A bad cursor or page size.")}


def _job_or_404(job_id: str) -> Job:
    try:
        return selectors.job_get(job_id=job_id)
    except Job.DoesNotExist:
        raise NotFound("no job with this id") from None


JOB_ONE_OR_MANY = PolymorphicProxySerializer(
    component_name="JobOneOrMany",
    serializers=[s.JobSerializer, s.JobCreatedSerializer(many=True)],
    resource_type_field_name=None,
    many=False,
)


class JobsApiView(APIView):
    queryset = Job.objects.none()  # for DjangoModelPermissions: the model is Job
    permission_classes = [JobPermissions]
    throttle_classes = [JobWriteThrottle]


class JobListApi(JobsApiView):
    name = "Jobs"  # what the browsable API calls it
    pagination = JobCursorPagination

    @extend_schema(
        operation_id="jobs_list",
        summary="List jobs, newest first",
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="The page cursor from next/previous."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="Jobs per page (at most 500)."),
            OpenApiParameter(
                "status", OpenApiTypes.STR, many=True, enum=[c for c, _ in Job._meta.get_field("status").choices or []]
            ),
            OpenApiParameter("type", OpenApiTypes.STR),
            OpenApiParameter("queue", OpenApiTypes.STR, enum=list(services.queues.QUEUE_NAMES)),
            OpenApiParameter("created_by", OpenApiTypes.INT),
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter("ended_after", OpenApiTypes.DATETIME),
            OpenApiParameter("ended_before", OpenApiTypes.DATETIME),
            OpenApiParameter("search", OpenApiTypes.STR, description="Text in the id, params or error."),
        ],
        responses={200: s.JobSerializer(many=True), **ERRORS, **BAD_ID},
    )
    def get(self, request: Request) -> Response:
        filters = {
            key: request.query_params.getlist(key) if key == "status" else request.query_params.get(key)
            for key in JobFilter.base_filters
            if key in request.query_params
        }
        jobs = selectors.job_list(filters=filters)
        paginator = self.pagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(s.JobSerializer(page, many=True).data)

    @extend_schema(
        operation_id="jobs_create",
        summary="Create a job, or many (a list: all or nothing)",
        description=(
            "An empty body creates an `example` job and answers it. A JSON list creates every job in it, "
            "or none, and answers each job's id, url, type, queue, status and scheduled_for."
        ),
        request=PolymorphicProxySerializer(
            component_name="JobCreateOneOrMany",
            serializers=[s.JobCreateSerializer, s.JobCreateSerializer(many=True)],
            resource_type_field_name=None,
            many=False,
        ),
        responses={
            201: JOB_ONE_OR_MANY,
            **WRITE_ERRORS,
        },
        examples=[
            OpenApiExample("example job", value={"type": "example", "params": {"duration": 5}}),
            OpenApiExample(
                "delayed e-mail",
                value={
                    "type": "email",
                    "params": {"to": "ada@example.com", "subject": "Hi", "body": "…"},
                    "delay_seconds": 60,
                },
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        # No body at all: the one-click example job. (Not `request.body`: a session's CSRF check
        # may have read the stream already, and Django then refuses to give the body.)
        data = request.data if request.stream is not None else {}
        if isinstance(data, list):
            bulk = s.JobCreateSerializer(data=data, many=True, allow_empty=False, max_length=services.MAX_BULK)
            bulk.is_valid(raise_exception=True)
            requests = [s.job_request(item) for item in bulk.validated_data]
            jobs = services.jobs_enqueue(requests=requests, user=request.user)
            return Response(s.JobCreatedSerializer(jobs, many=True).data, status=status.HTTP_201_CREATED)
        serializer = s.JobCreateSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        job = services.jobs_enqueue(requests=[serializer.to_request()], user=request.user)[0]
        return Response(s.JobSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetailApi(JobsApiView):
    name = "Job"  # what the browsable API calls it

    @extend_schema(
        operation_id="jobs_retrieve",
        summary="One job, with its attempt timeline",
        responses={200: s.JobDetailSerializer, **ERRORS, **NOT_FOUND, **BAD_ID},
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response(s.JobDetailSerializer(_job_or_404(job_id)).data)


class JobActionApi(JobsApiView):
    name = "Job action"  # what the browsable API calls it
    permission_classes = [ActOnJobs]  # retry/cancel/stop/promote need change_job, remove delete_job: see may_act

    @extend_schema(
        operation_id="jobs_action",
        summary="Retry, cancel, stop, promote or remove a job",
        description=(
            "retry, cancel, stop and promote need the change permission, remove the delete permission. "
            "Answers 409 when the job's status does not allow the action, 204 after remove."
        ),
        request=s.JobActionSerializer,
        responses={
            200: s.JobDetailSerializer,
            204: OpenApiResponse(description="Removed."),
            409: OpenApiResponse(s.ErrorSerializer, description="The job's status does not allow the action."),
            **WRITE_ERRORS,
            **NOT_FOUND,
        },
    )
    def post(self, request: Request, job_id: str) -> Response:
        serializer = s.JobActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        action = serializer.validated_data["action"]
        if not may_act(request, action):
            raise PermissionDenied(f"you may not {action} jobs")
        job = services.job_act(job=_job_or_404(job_id), action=action, user=request.user, via=JobAudit.Via.API)
        if job is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(s.JobDetailSerializer(_job_or_404(job_id)).data)


class JobBulkActionApi(JobsApiView):
    name = "Bulk job action"  # what the browsable API calls it
    permission_classes = [ActOnJobs]

    @extend_schema(
        operation_id="jobs_bulk_action",
        summary="Apply an action to every job a filter selects, in batches",
        request=s.JobBulkActionSerializer,
        responses={200: s.JobBulkActionResultSerializer, **WRITE_ERRORS},
        examples=[
            OpenApiExample(
                "retry every failed e-mail job",
                value={"action": "retry", "filters": {"status": ["failed"], "type": "email"}},
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = s.JobBulkActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        action = serializer.validated_data["action"]
        if not may_act(request, action):
            raise PermissionDenied(f"you may not {action} jobs")
        jobs = selectors.job_list(filters=request.data.get("filters"))
        result = services.jobs_act(jobs=jobs, action=action, user=request.user, via=JobAudit.Via.API)
        return Response(s.JobBulkActionResultSerializer(result).data)


class JobStatsApi(JobsApiView):
    name = "Job statistics"  # what the browsable API calls it
    permission_classes = [ReadJobs]

    @extend_schema(
        operation_id="jobs_stats",
        summary="Counts, queue health, workers, throughput",
        responses={200: s.JobStatsSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response(s.JobStatsSerializer(selectors.job_stats()).data)


class JobTypeListApi(JobsApiView):
    name = "Job types"  # what the browsable API calls it
    permission_classes = [ReadJobs]

    @extend_schema(
        operation_id="jobs_types",
        summary="The job types and their params schemas",
        responses={200: s.JobTypeSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response(s.JobTypeSerializer(selectors.job_types(), many=True).data)


class QueueListApi(JobsApiView):
    name = "Queues"  # what the browsable API calls it
    permission_classes = [ReadJobs]

    @extend_schema(
        operation_id="queues_list",
        summary="The queues: waiting, scheduled and running jobs, oldest waiting age, paused",
        responses={200: s.QueueHealthSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        health = selectors.queue_health()
        return Response(
            s.QueueHealthSerializer([{"name": name, **info} for name, info in health.items()], many=True).data
        )


class ScheduleListApi(JobsApiView):
    name = "Schedules"  # what the browsable API calls it
    permission_classes = [ReadSchedules]

    @extend_schema(
        operation_id="schedules_list",
        summary="The schedules (managed in the admin), by name, with their next and last run times",
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="The page cursor from next/previous."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="Schedules per page (at most 500)."),
        ],
        responses={200: s.ScheduleSerializer(many=True), **ERRORS, **BAD_PAGE},
    )
    def get(self, request: Request) -> Response:
        paginator = ScheduleCursorPagination()
        page = paginator.paginate_queryset(Schedule.objects.all(), request, view=self)
        return paginator.get_paginated_response(s.ScheduleSerializer(page, many=True).data)


QUEUE_ACTION_RESPONSES = {
    200: s.QueueHealthSerializer,
    **WRITE_ERRORS,
    404: OpenApiResponse(s.ErrorSerializer, description="No such queue."),
}


class QueuePauseApi(JobsApiView):
    name = "Pause queue"  # what the browsable API calls it
    permission_classes = [ActOnJobs]  # change_job, checked in post()
    paused = True

    @extend_schema(
        operation_id="queues_pause",
        summary="Pause a queue: workers take no new job from it (running ones finish)",
        request=None,
        responses=QUEUE_ACTION_RESPONSES,
    )
    def post(self, request: Request, name: str) -> Response:
        if not request.user.has_perm("jobs.change_job"):
            raise PermissionDenied("you may not pause or resume queues")
        if name not in services.queues.QUEUE_NAMES:
            raise NotFound(f"no queue named {name!r}")
        if self.paused:
            services.queue_pause(name=name)
        else:
            services.queue_resume(name=name)
        return Response(s.QueueHealthSerializer({"name": name, **selectors.queue_health()[name]}).data)


class QueueResumeApi(QueuePauseApi):
    name = "Resume queue"  # what the browsable API calls it
    paused = False

    @extend_schema(
        operation_id="queues_resume",
        summary="Resume a paused queue",
        request=None,
        responses=QUEUE_ACTION_RESPONSES,
    )
    def post(self, request: Request, name: str) -> Response:
        return super().post(request, name)


class TokenApi(ObtainAuthToken):
    """Trade a username and password for the API token of that user."""

    name = "API token"  # what the browsable API calls it
    throttle_classes = [JobWriteThrottle]

    @extend_schema(
        operation_id="auth_token",
        summary="Get your API token (send it as `Authorization: Token <key>`)",
        request=AuthTokenSerializer,
        responses={
            200: s.TokenSerializer,
            400: OpenApiResponse(s.ValidationErrorSerializer, description="Wrong username or password."),
            429: OpenApiResponse(s.ErrorSerializer, description="Too many attempts; see Retry-After."),
            503: OpenApiResponse(s.ErrorSerializer, description="The database is unreachable."),
        },
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)
