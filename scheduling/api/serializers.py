"""The API's JSON shapes: fields named as on the model and in ``jobs show --json``.

Serializers convert JSON types only; every rule of a job (cron, timezone, registered
task, window, overlap, limits) is the model's, applied by the services when they save.
"""

import datetime as dt
from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from scheduling import masking, schedules
from scheduling.models import (
    BackfillReprocess,
    ExecutionStatus,
    ExecutionTrigger,
    Job,
    JobExecution,
    JobGroup,
    OverlapPolicy,
)

MOMENT_FIELDS = ("run_at", "start_at", "end_at")
#: A job's state, read-only in the API: what its runs and pauses made of it.
STATE_FIELDS = (
    "next_run_at",
    *Job.PAUSE_FIELDS,
    "last_run_at",
    "last_status",
    "last_duration",
    "total_run_count",
    "consecutive_failures",
    "scheduled_run_count",
    "created_at",
    "updated_at",
)


@extend_schema_field(OpenApiTypes.DATETIME)
class MomentField(serializers.Field):
    """An ISO 8601 date-time; without an offset it is read in the job's timezone (as the
    import and the commands read it), so it is kept as text until the timezone is known."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not data.strip():
            self.fail("invalid")
        return data

    def to_representation(self, value: dt.datetime) -> str:
        return value.isoformat()

    default_error_messages = {
        "invalid": _("Give an ISO 8601 date-time, e.g. 2026-12-31T23:59:59."),
    }


class CalendarNamesField(serializers.ListField):
    """A job's exclusion calendars by name (sorted), as ``options.calendars`` of a config
    file and ``jobs add|modify --calendar`` name them; an unknown one is refused by the
    service that sets them (:func:`scheduling.calendar_services.job_set_calendars`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(), **kwargs)

    def get_attribute(self, job: Job) -> list[str]:
        return sorted(job.calendars.values_list("name", flat=True)) if job.pk else []


class LinksField(serializers.ListField):
    """A job's chain links (the jobs its finished runs start), as ``jobs show --json``'s
    ``then``; checked, cycles named, by the service that sets them
    (:func:`scheduling.chain_services.job_set_links`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.DictField(), **kwargs)

    def get_attribute(self, job: Job) -> list[dict[str, str]]:
        from scheduling import chain_services

        return [link.as_entry() for link in chain_services.job_links(job)] if job.pk else []

    def to_internal_value(self, data: Any) -> list[Any]:
        from scheduling import chain_services

        links, problems = chain_services.entries_parse(super().to_internal_value(data), "then")
        if problems:
            raise serializers.ValidationError(problems)
        return links


class JobSerializer(serializers.ModelSerializer):
    """A job: its definition (writable) and its state (read-only). ``version`` is the
    conflict token: an update that sends one older than the job's is refused (409)."""

    run_at = MomentField(required=False, allow_null=True)
    start_at = MomentField(required=False, allow_null=True)
    end_at = MomentField(required=False, allow_null=True)
    calendars = CalendarNamesField(
        required=False, help_text="The names of the job's exclusion calendars ([] for none)."
    )
    then = LinksField(
        required=False,
        help_text='Chain links: [{"job": "next", "on": "success|failure|always", "as": '
        '"kwarg or empty"}] ([] for none).',
    )
    version = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The job's version; sent with an update, a stale one gets 409.",
    )
    trigger_description = serializers.SerializerMethodField()
    last_status = serializers.ChoiceField(
        choices=ExecutionStatus.choices, read_only=True, allow_blank=True
    )

    class Meta:
        model = Job
        fields = (
            "id",
            *Job.EDITABLE_FIELDS,
            "calendars",
            "then",
            "version",
            "trigger_description",
            *STATE_FIELDS,
        )
        read_only_fields = STATE_FIELDS
        # The model's checks say these (full_clean, in the service), as everywhere: the
        # unique name, the queue and exchange name patterns.
        extra_kwargs = {
            name: {"validators": []} for name in ("name", "queue", "exchange", "routing_key")
        }

    def get_trigger_description(self, job: Job) -> str:
        return job.describe_trigger()

    def to_representation(self, job: Job) -> dict[str, Any]:
        data = super().to_representation(job)
        data["kwargs"] = masking.mask(job.kwargs)
        return data

    def model_fields(self, *, timezone: str) -> dict[str, Any]:
        """The validated data as model field values: date-times read in ``timezone``
        (``ValidationError`` naming the field), ``version``, ``calendars`` and ``then``
        (not fields the job's services set) left out."""
        fields = {
            k: v
            for k, v in self.validated_data.items()
            if k not in {"version", "calendars", "then"}
        }
        problems = {}
        try:
            schedules.get_timezone(timezone)
        except ValueError as exc:
            raise serializers.ValidationError({"timezone": [str(exc)]}) from None
        for name in MOMENT_FIELDS:
            if fields.get(name):
                try:
                    fields[name] = schedules.parse_moment(fields[name], timezone)
                except ValueError as exc:
                    problems[name] = [str(exc)]
        if problems:
            raise serializers.ValidationError(problems)
        return fields


class PauseSerializer(serializers.Serializer):
    """A pause: why, and optionally when the job resumes by itself."""

    reason = serializers.CharField(required=False, allow_blank=True, default="")
    resume_at = MomentField(required=False, allow_null=True, default=None)


class RunNowSerializer(serializers.Serializer):
    """A manual run's overrides, each for this run only: the overlap policy, keyword
    arguments over the job's (a key given replaces the job's), and the logical time the run
    sees as its scheduled time (in the job's timezone unless it has an offset)."""

    overlap = serializers.ChoiceField(
        choices=OverlapPolicy.choices, required=False, allow_null=True, default=None
    )
    kwargs = serializers.JSONField(required=False, allow_null=True, default=None)
    logical_at = MomentField(required=False, allow_null=True, default=None)


class BackfillSerializer(serializers.Serializer):
    """A backfill's range and choices (as ``jobs backfill``): ``start`` inclusive, ``end``
    exclusive, read in ``timezone`` (default the job's) unless they carry an offset."""

    start = MomentField()
    end = MomentField()
    timezone = serializers.CharField(required=False, allow_null=True, default=None)
    reprocess = serializers.ChoiceField(
        choices=BackfillReprocess.choices, required=False, default=BackfillReprocess.MISSING
    )
    overlap = serializers.ChoiceField(
        choices=OverlapPolicy.choices, required=False, allow_null=True, default=None
    )
    dry_run = serializers.BooleanField(required=False, default=False)


class RunStartedSerializer(serializers.Serializer):
    """What a run now answers: the Celery task id of the run sent."""

    task_id = serializers.CharField()


class CancelSerializer(serializers.Serializer):
    """Stop a run: cancel it (cooperative) or, with ``terminate``, kill it now."""

    terminate = serializers.BooleanField(required=False, default=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)


class ExecutionSerializer(serializers.ModelSerializer):
    """One run of a job (or a fire time that did not run), with its outcome."""

    status = serializers.ChoiceField(choices=ExecutionStatus.choices, read_only=True)
    trigger = serializers.ChoiceField(choices=ExecutionTrigger.choices, read_only=True)

    class Meta:
        model = JobExecution
        fields = (
            "id",
            "job",
            "job_name",
            "task",
            "trigger",
            "status",
            "scheduled_at",
            "started_at",
            "finished_at",
            "duration",
            "result",
            "exception",
            "traceback",
            "worker",
            "reason",
            "attempt",
            "retry_of",
            "progress",
            "progress_message",
            "cancel_requested_at",
            "cancelled_by",
        )
        read_only_fields = fields


class UpcomingSerializer(serializers.Serializer):
    """The next fire time of a job."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    next_run_at = serializers.DateTimeField(allow_null=True)
    trigger_description = serializers.CharField()


class HealthCheckSerializer(serializers.Serializer):
    """One health check's outcome."""

    check = serializers.CharField()
    ok = serializers.BooleanField()
    detail = serializers.CharField()
    seconds = serializers.FloatField()


class HealthSerializer(serializers.Serializer):
    """Database, broker, workers and beat (with the beat leader)."""

    ok = serializers.BooleanField()
    checks = HealthCheckSerializer(many=True)
    beat_leader = serializers.CharField(allow_null=True)


class SkipNextSerializer(serializers.Serializer):
    """The answer of skip-next: the fire time that will not run, and the job after it."""

    skipped = serializers.DateTimeField()
    job = JobSerializer()


class GroupSerializer(serializers.ModelSerializer):
    """A job group: its settings (writable: the cap on its jobs' runs at once, and the
    queue and alert recipients of its jobs that have none of their own; checked by the
    model when the group service saves them) and its state (read-only)."""

    jobs = serializers.IntegerField(read_only=True, help_text="How many jobs are in it.")
    enabled = serializers.IntegerField(read_only=True, help_text="How many of them are enabled.")
    paused = serializers.BooleanField(read_only=True)

    class Meta:
        model = JobGroup
        fields = (
            "name",
            "jobs",
            "enabled",
            "max_instances",
            "queue",
            "alert_emails",
            "alert_webhooks",
            "paused",
            "pause_reason",
            "paused_by",
            "paused_at",
        )
        read_only_fields = ("name", "pause_reason", "paused_by", "paused_at")
        # The model's checks say these (full_clean, in the service), as for a job.
        extra_kwargs = {"name": {"validators": []}, "queue": {"validators": []}}


class GroupPauseSerializer(serializers.Serializer):
    """A group's pause: why (kept on the group, and in its jobs' pause reason)."""

    reason = serializers.CharField(required=False, allow_blank=True, default="")


class GroupActionSerializer(serializers.Serializer):
    """What a group's pause or resume answers: the group after it, and the jobs it paused
    or resumed."""

    group = GroupSerializer()
    jobs = serializers.ListField(child=serializers.CharField())
