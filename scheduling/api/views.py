"""The API's endpoints, thin over the services (writes) and selectors (reads).

Each view's ``access`` table names, per action, the API key privilege and the Django
permission it needs (:mod:`scheduling.api.auth`). Every write runs inside an audit
context naming the key (or the session's user), so the audit trail shows who did it.
"""

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, pagination, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from scheduling import (
    audit,
    backfills,
    calendar_services,
    chain_services,
    group_services,
    maintenance,
    masking,
    schedules,
    selectors,
    services,
)
from scheduling.api import auth
from scheduling.api.serializers import (
    BackfillSerializer,
    CancelSerializer,
    ExecutionSerializer,
    GroupActionSerializer,
    GroupPauseSerializer,
    GroupSerializer,
    HealthSerializer,
    JobSerializer,
    PauseSerializer,
    RunNowSerializer,
    RunStartedSerializer,
    SkipNextSerializer,
    UpcomingSerializer,
)
from scheduling.models import (
    AuditSource,
    Backfill,
    ExecutionStatus,
    ExecutionTrigger,
    Job,
    JobExecution,
    SchedulerLease,
    TriggerType,
)


class Conflict(exceptions.APIException):
    """The update carried an older version than the job's (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the errors of the services: a ``ValidationError`` is a 400
    naming each field, a missing job or run a 404."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Job.DoesNotExist | JobExecution.DoesNotExist):
        exc = exceptions.NotFound(str(exc))
    return drf_exception_handler(exc, context)


class ApiView:
    """What every API view shares: JSON only, keys or staff sessions, the rate limit."""

    authentication_classes = [auth.ApiKeyAuthentication, auth.StaffSessionAuthentication]
    permission_classes = [auth.ApiAccess]
    throttle_classes = [auth.ApiKeyThrottle]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]

    def get_exception_handler(self):
        return exception_handler

    def audited(self):
        """The audit context of a change made by this request."""
        return audit.audit_context(source=AuditSource.API, actor=auth.actor(self.request))


class JobPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M`` (at most 500)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class JobFilterSerializer(serializers.Serializer):
    """The job list's filters."""

    group = serializers.CharField(required=False)
    task = serializers.CharField(required=False)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)
    trigger_type = serializers.ChoiceField(choices=TriggerType.choices, required=False)
    search = serializers.CharField(
        required=False, help_text="Text in the name, title or description."
    )


def query(serializer_class, request: Request) -> dict[str, Any]:
    """The request's query parameters, validated (400 naming the parameter)."""
    found = serializer_class(data=request.query_params)
    found.is_valid(raise_exception=True)
    return found.validated_data


class CountSerializer(serializers.Serializer):
    """How many upcoming fire times."""

    count = serializers.IntegerField(required=False, default=5, min_value=1, max_value=100)


class JobUpcomingSerializer(serializers.Serializer):
    """A job's next fire times."""

    name = serializers.CharField()
    upcoming = serializers.ListField(child=serializers.DateTimeField())


JOB_LOOKUP = OpenApiParameter(
    "job", OpenApiTypes.STR, OpenApiParameter.PATH, description="The job's name or id."
)


@extend_schema(parameters=[JOB_LOOKUP])
class JobViewSet(ApiView, viewsets.ModelViewSet):
    """Jobs: list, create, read, update (``version`` as the conflict token), delete, and
    the actions pause, resume, run now (with overrides), backfill (with a dry run) and
    upcoming fire times."""

    serializer_class = JobSerializer
    pagination_class = JobPagination
    lookup_url_kwarg = "job"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    access = {
        "list": ("read", "view_job"),
        "retrieve": ("read", "view_job"),
        "upcoming": ("read", "view_job"),
        "create": ("edit", "add_job"),
        "update": ("edit", "change_job"),
        "partial_update": ("edit", "change_job"),
        "destroy": ("edit", "delete_job"),
        "pause": ("pause", "pause_job"),
        "resume": ("pause", "pause_job"),
        "skip_next": ("pause", "pause_job"),
        "run": ("run", "run_job"),
        "backfill": ("run", "run_job"),
        "metadata": ("read", "view_job"),
    }

    def get_queryset(self):
        jobs = auth.scope(self.request, Job.objects.order_by("name"), "name")
        if self.action != "list":
            return jobs
        filters = query(JobFilterSerializer, self.request)
        for name in ("group", "task", "trigger_type"):
            if filters.get(name):
                jobs = jobs.filter(**{name: filters[name]})
        if filters.get("enabled") is not None:
            jobs = jobs.filter(enabled=filters["enabled"])
        if filters.get("search"):
            text = filters["search"]
            jobs = (
                jobs.filter(name__icontains=text)
                | jobs.filter(title__icontains=text)
                | jobs.filter(description__icontains=text)
            )
        return jobs

    def get_object(self) -> Job:
        job = selectors.job_get(ident=self.kwargs["job"])
        self.check_object_permissions(self.request, job)
        return job

    @extend_schema(parameters=[JobFilterSerializer])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        auth.job_name_check(request, serializer.validated_data["name"])
        timezone = serializer.validated_data.get("timezone") or Job().timezone
        fields = serializer.model_fields(timezone=timezone)
        fields.setdefault("trigger_type", Job._meta.get_field("trigger_type").default)
        auth.group_join_check(request, fields.get("group") or Job().group)
        with transaction.atomic(), self.audited():
            job = services.job_create(**fields)
            if serializer.validated_data.get("calendars"):
                job = calendar_services.job_set_calendars(
                    job=job, names=serializer.validated_data["calendars"]
                )
            if serializer.validated_data.get("then"):
                job = chain_services.job_set_links(job=job, links=serializer.validated_data["then"])
        return Response(self.get_serializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: JobSerializer, 409: OpenApiTypes.OBJECT})
    def update(self, request, *args, partial: bool = False, **kwargs):
        job = self.get_object()
        serializer = self.get_serializer(job, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        sent_version = serializer.validated_data.get("version")
        with transaction.atomic(), self.audited():
            job = Job.objects.select_for_update().get(pk=job.pk)
            if sent_version is not None and sent_version != job.version:
                raise Conflict(
                    _(
                        "The job is at version %(current)d, not %(sent)d: it changed since "
                        "you read it; read it again and repeat the change."
                    )
                    % {"current": job.version, "sent": sent_version}
                )
            fields = serializer.model_fields(
                timezone=serializer.validated_data.get("timezone") or job.timezone
            )
            if "name" in fields:
                auth.job_name_check(request, fields["name"])
            if "group" in fields and fields["group"] != job.group:
                auth.group_join_check(request, fields["group"], job)
            if "enabled" in fields and fields["enabled"] != job.enabled:
                self._pause_check(request)
            if "kwargs" in fields:
                fields["kwargs"] = masking.unmask_checked(
                    new=fields["kwargs"], old=job.kwargs, may_keep=self._may_keep(request)
                )
            changed = {k: v for k, v in fields.items() if getattr(job, k) != v}
            if changed:
                services.job_update(job=job, **changed)
            if "calendars" in serializer.validated_data:
                job = calendar_services.job_set_calendars(
                    job=job, names=serializer.validated_data["calendars"]
                )
            if "then" in serializer.validated_data:
                job = chain_services.job_set_links(job=job, links=serializer.validated_data["then"])
        return Response(self.get_serializer(job).data)

    @extend_schema(responses={200: JobSerializer, 409: OpenApiTypes.OBJECT})
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def _pause_check(self, request) -> None:
        """Changing ``enabled`` pauses or resumes: it needs that privilege too."""
        key = auth.request_key(request)
        if key is not None and "pause" not in key.privileges:
            raise exceptions.PermissionDenied(
                _("The API key %(key)s lacks the privilege %(privilege)s.")
                % {"key": key.name, "privilege": "pause"}
            )
        if key is None and not request.user.has_perm("scheduling.pause_job"):
            raise exceptions.PermissionDenied(
                _("User %(user)s lacks the permission %(permission)s.")
                % {"user": request.user.get_username(), "permission": "scheduling.pause_job"}
            )

    @staticmethod
    def _may_keep(request) -> bool:
        """Whether a masked secret sent back may be kept while other kwargs change: a
        key's edit privilege, or a user's ``keep_secrets`` permission."""
        if auth.request_key(request) is not None:
            return True
        return request.user.has_perm("scheduling.keep_secrets")

    def destroy(self, request, *args, **kwargs):
        job = self.get_object()
        with self.audited():
            services.job_remove(job=job)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=PauseSerializer, responses={200: JobSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request, *args, **kwargs):
        job = self.get_object()
        body = PauseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        until = body.validated_data["resume_at"]
        if until is not None:
            try:
                until = schedules.parse_moment(until, job.timezone)
            except ValueError as exc:
                raise exceptions.ValidationError({"resume_at": [str(exc)]}) from None
        with self.audited():
            job = services.job_pause(job=job, reason=body.validated_data["reason"], until=until)
        return Response(self.get_serializer(job).data)

    @extend_schema(request=None, responses={200: JobSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, *args, **kwargs):
        job = self.get_object()
        with self.audited():
            job = services.job_resume(job=job)
        return Response(self.get_serializer(job).data)

    @extend_schema(
        request=None,
        responses={200: SkipNextSerializer},
        description="Skip the job's next fire time, once (as `jobs skip-next`): it is recorded "
        "as skipped when it comes. A job with nothing due, or already skipping one, is a 400.",
    )
    @action(detail=True, methods=["post"], url_path="skip-next")
    def skip_next(self, request, *args, **kwargs):
        job = self.get_object()
        with self.audited():
            skipped = calendar_services.job_skip_next(job=job)
        job.refresh_from_db()
        return Response({"skipped": skipped, "job": self.get_serializer(job).data})

    @extend_schema(request=RunNowSerializer, responses={202: RunStartedSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, *args, **kwargs):
        job = self.get_object()
        body = RunNowSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic(), self.audited():
            task_id = services.job_run_now(
                job=job,
                overlap=data["overlap"],
                kwargs=data["kwargs"],
                logical_at=_moment(data["logical_at"], job.timezone, "logical_at"),
                user=auth.secret_keeper(request),
            )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=BackfillSerializer,
        responses={200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT},
        description="Backfill the job's fire times in [start, end) (as `jobs backfill`). "
        "With `dry_run` nothing is written and the answer (200) lists each fire time under "
        "`runs` with `scheduled_at` and `existing`; otherwise the backfill starts (202).",
    )
    @action(detail=True, methods=["post"])
    def backfill(self, request, *args, **kwargs):
        job = self.get_object()
        body = BackfillSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        tz_name = data["timezone"] or job.timezone
        try:
            schedules.get_timezone(tz_name)
        except ValueError as exc:
            raise exceptions.ValidationError({"timezone": [str(exc)]}) from None
        with transaction.atomic(), self.audited():
            backfill = services.job_backfill(
                job=job,
                start=_moment(data["start"], tz_name, "start"),
                end=_moment(data["end"], tz_name, "end"),
                reprocess=data["reprocess"],
                overlap=data["overlap"],
                dry_run=data["dry_run"],
                by=auth.actor(request),
                tz_name=tz_name,
            )
        answer = backfills.plan_json(backfill, tz_name)
        if not data["dry_run"]:
            answer.pop("runs", None)
            return Response(answer, status=status.HTTP_202_ACCEPTED)
        return Response(answer)

    @extend_schema(parameters=[CountSerializer], responses={200: JobUpcomingSerializer})
    @action(detail=True, methods=["get"], pagination_class=None)
    def upcoming(self, request, *args, **kwargs):
        job = self.get_object()
        count = query(CountSerializer, request)["count"]
        times = selectors.job_upcoming_runs(job=job, count=count)
        return Response({"name": job.name, "upcoming": [t.isoformat() for t in times]})


GROUP_LOOKUP = OpenApiParameter(
    "name", OpenApiTypes.STR, OpenApiParameter.PATH, description="The group's name."
)


@extend_schema(parameters=[GROUP_LOOKUP])
class GroupViewSet(ApiView, viewsets.GenericViewSet):
    """Job groups (a group name some job has, or a group on record): list, read, update
    the settings (through :mod:`scheduling.group_services`), and pause or resume every
    job of one. A key with a job glob reaches a group only when every job of it is inside
    the glob (:func:`scheduling.api.auth.groups_reached`)."""

    serializer_class = GroupSerializer
    pagination_class = JobPagination
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    access = {
        "list": ("read", "view_job"),
        "retrieve": ("read", "view_job"),
        "update": ("edit", "change_job"),
        "partial_update": ("edit", "change_job"),
        "pause": ("pause", "pause_job"),
        "resume": ("pause", "pause_job"),
        "metadata": ("read", "view_job"),
    }

    def get_object(self):
        name = self.kwargs["name"]
        found = selectors.group_rows(names=[name])
        if not found:
            raise exceptions.NotFound(_("No job group named %(name)r.") % {"name": name})
        auth.group_check(self.request, found[0])
        return found[0]

    def _answer(self, name: str) -> dict[str, Any]:
        return self.get_serializer(selectors.group_rows(names=[name])[0]).data

    def list(self, request, *args, **kwargs):
        groups = auth.groups_reached(request, selectors.group_rows())
        page = self.paginate_queryset(groups)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, *args, **kwargs):
        return Response(self.get_serializer(self.get_object()).data)

    def update(self, request, *args, partial: bool = False, **kwargs):
        group = self.get_object()
        serializer = self.get_serializer(group, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data:
            with self.audited():
                group_services.group_update(name=group.name, **serializer.validated_data)
        return Response(self._answer(group.name))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(request=GroupPauseSerializer, responses={200: GroupActionSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request, *args, **kwargs):
        group = self.get_object()
        body = GroupPauseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with self.audited():
                jobs = group_services.group_pause(
                    name=group.name, reason=body.validated_data["reason"]
                )
        except DjangoValidationError as exc:
            # The body's field is ``reason``; the group keeps it as its pause reason.
            detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
            if "pause_reason" in detail:
                detail["reason"] = detail.pop("pause_reason")
            raise exceptions.ValidationError(detail) from None
        return Response({"group": self._answer(group.name), "jobs": [job.name for job in jobs]})

    @extend_schema(request=None, responses={200: GroupActionSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, *args, **kwargs):
        group = self.get_object()
        with self.audited():
            jobs = group_services.group_resume(name=group.name)
        return Response({"group": self._answer(group.name), "jobs": [job.name for job in jobs]})


class ExecutionPagination(pagination.CursorPagination):
    """Newest first, ``?cursor=`` from ``next``/``previous`` (stable while runs are added)."""

    ordering = ("-started_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ExecutionFilterSerializer(serializers.Serializer):
    """The execution list's filters."""

    job = serializers.CharField(required=False, help_text="The job's name or id.")
    status = serializers.ChoiceField(choices=ExecutionStatus.choices, required=False)
    trigger = serializers.ChoiceField(choices=ExecutionTrigger.choices, required=False)
    since = serializers.DateTimeField(required=False, help_text="Started at or after.")
    until = serializers.DateTimeField(required=False, help_text="Started before.")


class ExecutionViewSet(
    ApiView, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Executions (runs): list with filters and cursor pagination, read one, cancel one,
    re-run one."""

    serializer_class = ExecutionSerializer
    pagination_class = ExecutionPagination
    lookup_value_regex = "[^/]+"  # a malformed id is the API's JSON 404, not Django's page
    access = {
        "list": ("read", "view_jobexecution"),
        "retrieve": ("read", "view_jobexecution"),
        "cancel": ("run", "cancel_run"),
        "rerun": ("run", "run_job"),
        "metadata": ("read", "view_jobexecution"),
    }

    def get_queryset(self):
        if self.action != "list":
            return JobExecution.objects.all()  # one outside the key's glob: 403, not 404
        runs = auth.scope(self.request, JobExecution.objects.all(), "job_name")
        filters = query(ExecutionFilterSerializer, self.request)
        if filters.get("job"):
            text = filters["job"]
            runs = runs.filter(job_name=text) | (
                runs.filter(job_id=int(text)) if text.isdigit() else runs.none()
            )
        for name in ("status", "trigger"):
            if filters.get(name):
                runs = runs.filter(**{name: filters[name]})
        if filters.get("since"):
            runs = runs.filter(started_at__gte=filters["since"])
        if filters.get("until"):
            runs = runs.filter(started_at__lt=filters["until"])
        return runs

    @extend_schema(parameters=[ExecutionFilterSerializer])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=CancelSerializer, responses={200: ExecutionSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        run = self.get_object()
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with self.audited():
            run = services.execution_cancel(
                execution=run,
                terminate=body.validated_data["terminate"],
                by=auth.actor(request),
                reason=body.validated_data["reason"],
            )
        return Response(ExecutionSerializer(run).data)

    @extend_schema(request=None, responses={202: RunStartedSerializer})
    @action(detail=True, methods=["post"])
    def rerun(self, request, *args, **kwargs):
        run = self.get_object()
        with transaction.atomic(), self.audited():
            task_id = services.execution_rerun(execution=run, by=auth.actor(request))
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)


class BackfillViewSet(ApiView, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Backfills: read one (its state and counts), cancel one (its fire times not sent
    yet are cancelled)."""

    queryset = Backfill.objects.all()
    lookup_value_regex = "[^/]+"  # a malformed id is the API's JSON 404, not Django's page
    metadata_class = None  # OPTIONS: 405 (its answers are those of jobs/{job}/backfill/)
    access = {
        "retrieve": ("read", "view_job"),
        "cancel": ("run", "run_job"),
        "metadata": ("read", "view_job"),
    }

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request, *args, **kwargs):
        backfill = self.get_object()
        answer = backfills.plan_json(backfill, backfill.timezone)
        answer.pop("runs", None)
        return Response(answer)

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        backfill = self.get_object()
        with transaction.atomic(), self.audited():
            backfill = services.backfill_cancel(backfill=backfill, by=auth.actor(request))
        answer = backfills.plan_json(backfill, backfill.timezone)
        answer.pop("runs", None)
        return Response(answer)


def _moment(text: str | None, tz_name: str, field: str) -> dt.datetime | None:
    """A date-time of a request body, read in ``tz_name`` unless it carries an offset
    (a 400 naming ``field`` otherwise)."""
    if text is None:
        return None
    try:
        return schedules.parse_moment(text, tz_name)
    except ValueError as exc:
        raise exceptions.ValidationError({field: [str(exc)]}) from None


class StatisticsQuerySerializer(serializers.Serializer):
    """The statistics' window and job."""

    window = serializers.ChoiceField(choices=list(selectors.WINDOWS), required=False, default="day")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    job = serializers.CharField(required=False, help_text="Only this job (name).")
    threshold = serializers.FloatField(required=False, help_text="Slow above (s).")


class StatisticsView(ApiView, APIView):
    """Per-job run statistics and the slow-jobs report over a window (as
    ``/api/statistics/`` and ``jobs stats``)."""

    access = {"GET": ("read", "view_job"), "OPTIONS": ("read", "view_job")}

    @extend_schema(parameters=[StatisticsQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        params = query(StatisticsQuerySerializer, request)
        since, until = selectors.window_bounds(
            window=params["window"], since=params.get("since"), until=params.get("until")
        )
        jobs = auth.scope(request, Job.objects.order_by("name"), "name")
        if params.get("job"):
            jobs = jobs.filter(name=params["job"])
        names = set(jobs.values_list("name", flat=True))
        return Response(
            {
                "since": since.isoformat(),
                "until": until.isoformat(),
                "jobs": [
                    selectors.job_statistics(job=job, since=since, until=until) for job in jobs
                ],
                "slow_jobs": [
                    row
                    for row in selectors.slow_jobs(
                        since=since, until=until, threshold=params.get("threshold")
                    )
                    if row["job"] in names
                ],
            }
        )


class UpcomingQuerySerializer(serializers.Serializer):
    """How many jobs."""

    limit = serializers.IntegerField(required=False, default=15, min_value=1, max_value=500)


class UpcomingView(ApiView, APIView):
    """The jobs that fire next, soonest first."""

    access = {"GET": ("read", "view_job"), "OPTIONS": ("read", "view_job")}

    @extend_schema(
        parameters=[UpcomingQuerySerializer], responses={200: UpcomingSerializer(many=True)}
    )
    def get(self, request):
        limit = query(UpcomingQuerySerializer, request)["limit"]
        jobs = auth.scope(request, Job.objects.all(), "name")
        return Response(
            [
                {
                    "id": job.pk,
                    "name": job.name,
                    "next_run_at": job.next_run_at,
                    "trigger_description": job.describe_trigger(),
                }
                for job in selectors.upcoming_runs(limit=limit, jobs=jobs)
            ]
        )


class HealthView(ApiView, APIView):
    """Database, broker, workers and beat, each checked now; and the beat leader."""

    access = {"GET": ("read", "view_job"), "OPTIONS": ("read", "view_job")}

    @extend_schema(responses={200: HealthSerializer})
    def get(self, request):
        report = maintenance.health_report(checks=["database", "broker", "workers", "beat"])
        lease = SchedulerLease.objects.filter(expires_at__gt=dt.datetime.now(dt.UTC)).first()
        return Response(
            {
                "ok": all(item["ok"] for item in report),
                "checks": report,
                "beat_leader": lease.holder if lease is not None and lease.holder else None,
            }
        )
