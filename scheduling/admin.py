"""Admin pages: jobs (edit, pause, resume, run now, preview) and executions (read-only).

Thin by design: every write goes through :mod:`scheduling.services`.
"""

import datetime as dt
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_celery_beat import models as beat_models

from scheduling import charts, masking, registry, schedules, selectors, services
from scheduling.audit import audit_context
from scheduling.models import (
    Alert,
    BeatHeartbeat,
    ExecutionStatus,
    Job,
    JobAlertStatus,
    JobChange,
    JobExecution,
    SchedulerLease,
    TriggerType,
)

# Our scheduler reads Job rows only: the stock periodic-task pages would define tasks
# that never run, so they are hidden.
for _model in (
    beat_models.PeriodicTask,
    beat_models.IntervalSchedule,
    beat_models.CrontabSchedule,
    beat_models.SolarSchedule,
    beat_models.ClockedSchedule,
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


def _local(moment, tz_name: str) -> str:
    try:
        tz = schedules.get_timezone(tz_name)
    except ValueError:
        tz = timezone.get_current_timezone()
    return date_format(moment.astimezone(tz), "Y-m-d H:i:s T")


def _in_job_timezone(moment, tz_name: str):
    """Read the wall-clock time the operator typed (parsed in the server's timezone) in the
    job's timezone instead."""
    naive = timezone.make_naive(moment, timezone.get_current_timezone())
    return naive.replace(tzinfo=schedules.get_timezone(tz_name))


def _describe_changes(change: JobChange) -> str:
    """An audit entry's changes in one line: ``field: old → new; …``."""
    return "; ".join(f"{k}: {v[0]!r} → {v[1]!r}" for k, v in change.changes.items())


def _swap(field: str) -> str:
    return "masked_kwargs" if field == "kwargs" else field


class ReadOnlyAdminMixin:
    """Records written by the product itself: viewed in the admin, never added or edited."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class JobAdminForm(forms.ModelForm):
    """Shows only registered tasks; the model's ``clean`` names any bad field.

    ``may_keep_secrets`` (set per request by :meth:`JobAdmin.get_form`): whether a masked
    secret sent back is kept even when the other keyword arguments change.
    """

    may_keep_secrets = False

    task = forms.ChoiceField(label=_("task"), choices=())
    timezone = forms.ChoiceField(label=_("timezone"), choices=())

    class Meta:
        model = Job
        fields = Job.EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A user who may only view the job gets a form without the model's fields (they
        # are shown read-only), so each field is set up only when it is there.
        task_choices = [("", "---------"), *registry.choices()]
        current = self.instance.task if self.instance.pk else None
        if current and not registry.is_registered(current):
            task_choices.append((current, _("%(task)s (not registered)") % {"task": current}))
        self.fields["task"].choices = task_choices
        self.fields["timezone"].choices = [
            (name, name) for name in sorted(schedules.available_timezones())
        ]
        self.fields["timezone"].initial = self.instance.timezone
        if "run_at" in self.fields:
            if self.instance.run_at and self.instance.timezone in schedules.available_timezones():
                # Shown as the wall-clock time in the job's timezone, not the server's.
                tz = schedules.get_timezone(self.instance.timezone)
                self.initial["run_at"] = self.instance.run_at.astimezone(tz).replace(tzinfo=None)
            self.fields["run_at"].help_text = _("Date and time in the job's timezone.")
        if self.instance.pk and isinstance(self.instance.kwargs, dict):
            # Secrets are shown masked; a masked value sent back keeps the stored one.
            self.initial["kwargs"] = masking.mask(self.instance.kwargs)

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk and "kwargs" in cleaned:
            stored = (
                Job.objects.filter(pk=self.instance.pk).values_list("kwargs", flat=True).first()
            )
            try:
                cleaned["kwargs"] = masking.unmask_checked(
                    new=cleaned["kwargs"], old=stored, may_keep=self.may_keep_secrets
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        run_at, tz_name = cleaned.get("run_at"), cleaned.get("timezone")
        if run_at and tz_name in schedules.available_timezones():
            try:
                cleaned["run_at"] = _in_job_timezone(run_at, tz_name)
                cleaned["run_at"].astimezone(dt.UTC)
            except (OverflowError, ValueError):
                self.add_error("run_at", _("The date is out of range."))
                cleaned.pop("run_at", None)
            else:
                self.instance.run_at = cleaned["run_at"]
        return cleaned


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs: the list an operator scans, the form with its live preview, the actions and the dashboard."""

    form = JobAdminForm
    list_display = (
        "name",
        "group",
        "task",
        "trigger_words",
        "enabled",
        "next_run",
        "last_outcome",
        "executions_link",
    )
    list_filter = ("enabled", "trigger_type", "group", "last_status", "task")
    search_fields = ("name", "description", "task", "group")
    actions = ("pause_jobs", "resume_jobs", "run_jobs_now")
    status_fields = (
        "next_run_at",
        "last_run_at",
        "last_status",
        "last_duration",
        "total_run_count",
        "created_at",
        "updated_at",
    )
    readonly_fields = ("recent_changes", "schedule_preview", *status_fields)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "title",
                    "description",
                    "group",
                    "task",
                    "args",
                    "kwargs",
                    "enabled",
                )
            },
        ),
        (_("Trigger"), {"fields": ("trigger_type", "timezone")}),
        (
            _("Cron"),
            {"fields": ("cron_expression",), "classes": ("trigger-section", "trigger-cron")},
        ),
        (
            _("Interval"),
            {
                "fields": ("interval_every", "interval_period"),
                "classes": ("trigger-section", "trigger-interval"),
            },
        ),
        (
            _("Once at a date"),
            {"fields": ("run_at",), "classes": ("trigger-section", "trigger-date")},
        ),
        (_("Schedule preview"), {"fields": ("schedule_preview",)}),
        (
            _("Execution options"),
            {"fields": ("coalesce", "max_instances", "misfire_grace_time", "jitter")},
        ),
        (_("Time limits"), {"fields": ("soft_time_limit", "time_limit")}),
        (_("Routing"), {"fields": Job.ROUTING_FIELDS}),
        (
            _("Alerts"),
            {"fields": ("slow_threshold", "alert_emails", "alert_webhooks", "alert_grace")},
        ),
        (
            _("Retries"),
            {
                "fields": (
                    "max_retries",
                    "retry_backoff",
                    "retry_backoff_max",
                    "retry_jitter",
                    "retry_on",
                )
            },
        ),
        (_("Status"), {"fields": status_fields}),
        (_("Audit trail"), {"fields": ("recent_changes",), "classes": ("collapse",)}),
    )

    class Media:
        js = ("scheduling/job_form.js",)

    # --- list columns ---------------------------------------------------------------------
    @admin.display(description=_("trigger"))
    def trigger_words(self, job: Job) -> str:
        return job.describe_trigger()

    @admin.display(description=_("next run"), ordering="next_run_at")
    def next_run(self, job: Job) -> str:
        if not job.enabled:
            return _("paused")
        return _local(job.next_run_at, job.timezone) if job.next_run_at else "—"

    @admin.display(description=_("last run"), ordering="last_run_at")
    def last_outcome(self, job: Job) -> str:
        if not job.last_status:
            return "—"
        icon = {"success": "✔", "failure": "✘"}.get(job.last_status, "…")
        duration = f" {job.last_duration:.3f}s" if job.last_duration is not None else ""
        return f"{icon} {ExecutionStatus(job.last_status).label}{duration}"

    @admin.display(description=_("executions"))
    def executions_link(self, job: Job) -> str:
        url = reverse("admin:scheduling_jobexecution_changelist") + f"?job__id__exact={job.pk}"
        return format_html('<a href="{}">{}</a>', url, _("history"))

    @admin.display(description=_("recent changes"))
    def recent_changes(self, job: Job) -> str:
        if job.pk is None:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    date_format(timezone.localtime(change.at), "Y-m-d H:i:s"),
                    change.action,
                    change.get_source_display(),
                    change.actor or "—",
                    _describe_changes(change)[:500],
                )
                for change in job.changes.all()[:20]
            ),
        )
        url = reverse("admin:scheduling_jobchange_changelist") + f"?job__id__exact={job.pk}"
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>"
            '<p><a href="{}">{}</a></p>',
            _("when"),
            _("action"),
            _("source"),
            _("who"),
            _("changes"),
            rows,
            url,
            _("all changes"),
        )

    @admin.display(description=_("schedule preview"))
    def schedule_preview(self, job: Job) -> str:
        if job.pk is None:
            return _("Shown as you type, and after saving.")
        runs = selectors.job_upcoming_runs(job=job, count=5)
        items = format_html_join("", "<li>{}</li>", ((_local(r, job.timezone),) for r in runs))
        return format_html(
            '<div id="schedule-preview"><p>{}</p><ol>{}</ol></div>',
            job.describe_trigger(),
            items or _("No upcoming runs."),
        )

    @admin.display(description=_("keyword arguments"))
    def masked_kwargs(self, job: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(masking.mask(job.kwargs), indent=2))

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not self.has_pause_permission(request):
            fields.append("enabled")  # pausing has its own permission
        return [*fields, "masked_kwargs"]

    def get_fieldsets(self, request, obj=None):
        """A user who may not change the job sees its kwargs read-only: masked, as in the
        form (the stock read-only field would show them as stored)."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        return [
            (title, {**options, "fields": [_swap(f) for f in options["fields"]]})
            for title, options in fieldsets
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.may_keep_secrets = request.user.has_perm("scheduling.keep_secrets")
        return form

    # --- every change made here is attributed to the admin and the user ------------------
    def changeform_view(self, request, *args, **kwargs):
        with audit_context(source="admin", actor=request.user.get_username()):
            return super().changeform_view(request, *args, **kwargs)

    def changelist_view(self, request, *args, **kwargs):
        with audit_context(source="admin", actor=request.user.get_username()):
            return super().changelist_view(request, *args, **kwargs)

    def delete_view(self, request, *args, **kwargs):
        with audit_context(source="admin", actor=request.user.get_username()):
            return super().delete_view(request, *args, **kwargs)

    # --- saving through the services -----------------------------------------------------
    def save_model(self, request, obj, form, change):
        services.job_save(job=obj, changed=form.changed_data if change else None)

    def delete_model(self, request, obj):
        services.job_remove(job=obj)

    def delete_queryset(self, request, queryset):
        for job in queryset:
            services.job_remove(job=job)

    # --- permissions for the actions -------------------------------------------------------
    def has_pause_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.pause_job")

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.run_job")

    @admin.action(description=_("Pause selected jobs"), permissions=["pause"])
    def pause_jobs(self, request, queryset: QuerySet[Job]):
        done = self._each(request, queryset, services.job_pause)
        self.message_user(
            request, ngettext("%(n)d job paused.", "%(n)d jobs paused.", done) % {"n": done}
        )

    @admin.action(description=_("Resume selected jobs"), permissions=["pause"])
    def resume_jobs(self, request, queryset: QuerySet[Job]):
        done = self._each(request, queryset, services.job_resume)
        self.message_user(
            request, ngettext("%(n)d job resumed.", "%(n)d jobs resumed.", done) % {"n": done}
        )

    @admin.action(description=_("Run selected jobs now"), permissions=["run"])
    def run_jobs_now(self, request, queryset: QuerySet[Job]):
        done = self._each(request, queryset, services.job_run_now)
        self.message_user(
            request,
            ngettext("%(n)d run sent to the workers.", "%(n)d runs sent to the workers.", done)
            % {"n": done},
        )

    def _each(self, request, queryset: QuerySet[Job], service) -> int:
        """Apply ``service`` to each job; a job that cannot be changed is named, not a 500."""
        done = 0
        for job in queryset:
            try:
                service(job=job)
            except ValidationError as exc:
                self.message_user(request, f"{job}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                done += 1
        return done

    # --- live preview of a trigger while the form is edited ---------------------------------
    def get_urls(self):
        preview = path(
            "preview/",
            self.admin_site.admin_view(self.preview_view),
            name="scheduling_job_preview",
        )
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),
            name="scheduling_dashboard",
        )
        return [preview, dashboard, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest):
        """Charts: slowest jobs, outcomes per day, one job's durations; upcoming runs."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = request.GET.get("window", "day")
        try:
            since, until = selectors.window_bounds(window=window)
        except ValidationError:
            window, (since, until) = "day", selectors.window_bounds(window="day")
        slow = selectors.slow_jobs(since=since, until=until, threshold=0)[:15]
        outcomes = selectors.outcomes_per_day(days=14)
        days = sorted({row["day"] for row in outcomes})
        statuses = [s for s in charts.COLORS if any(r["status"] == s for r in outcomes)]
        series = {
            status: [
                sum(r["runs"] for r in outcomes if r["day"] == day and r["status"] == status)
                for day in days
            ]
            for status in statuses
        }
        job = Job.objects.filter(name=request.GET.get("job", "")).first()
        if job is None and slow:
            job = Job.objects.filter(name=slow[0]["job"]).first()
        stats = selectors.job_statistics(job=job, since=since, until=until) if job else None
        points = (
            [(p["at"], p["duration"], p["status"]) for p in selectors.duration_series(job=job)]
            if job
            else []
        )
        context = {
            **self.admin_site.each_context(request),
            "title": _("Dashboard"),
            "opts": self.model._meta,
            "window": window,
            "windows": list(selectors.WINDOWS),
            "slow_chart": charts.horizontal_bars(
                [(row["job"], row["avg"]) for row in slow], title=str(_("Slowest jobs (average)"))
            ),
            "outcome_chart": charts.stacked_columns(days, series, title=str(_("Outcomes per day"))),
            "duration_chart": charts.line(points, title=str(_("Duration over time"))),
            "job": job,
            "jobs": Job.objects.order_by("name").values_list("name", flat=True),
            "stats": stats,
            "slow_report": selectors.slow_jobs(since=since, until=until),
            "upcoming": selectors.upcoming_runs(),
            "firing": JobAlertStatus.objects.filter(firing=True).select_related("job"),
        }
        return TemplateResponse(request, "scheduling/dashboard.html", context)

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """JSON: the trigger in words and its next 5 fire times, or the error in it."""
        if not (self.has_view_permission(request) or self.has_add_permission(request)):
            return JsonResponse({"error": str(_("Permission denied."))}, status=403)
        data = request.GET
        stored = (
            Job.objects.filter(pk=data["object_id"]).first()
            if data.get("object_id", "").isdigit()
            else None
        )
        job = Job(
            trigger_type=data.get("trigger_type", TriggerType.CRON),
            cron_expression=data.get("cron_expression", ""),
            interval_period=data.get("interval_period", "minutes"),
            timezone=data.get("timezone") or Job().timezone,
        )
        if stored is not None:
            job.schedule_anchor = stored.schedule_anchor
        try:
            if data.get("interval_every"):
                job.interval_every = int(data["interval_every"])
            if data.get("run_at"):
                job.run_at = _in_job_timezone(
                    forms.DateTimeField().clean(data["run_at"]), job.timezone
                )
            job.trigger()
            runs = selectors.job_upcoming_runs(job=job, count=5)
        except (ValueError, ValidationError, OverflowError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            return JsonResponse({"error": message}, status=400)
        return JsonResponse(
            {
                "description": job.describe_trigger(),
                "next_runs": [_local(run, job.timezone) for run in runs],
            }
        )


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered executions list from PostgreSQL's table statistics.

    The executions table grows to millions of rows; an exact COUNT(*) of all of it on
    every page view costs a full scan. Filtered lists (a job, an outcome, a date) are
    counted exactly: their indexes keep that cheap.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor == "postgresql" and not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                    [queryset.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > 100_000:
                return int(row[0])
        return super().count


@admin.register(JobExecution)
class JobExecutionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every run, read-only: filter by job, outcome, trigger and date."""

    paginator = EstimatedCountPaginator
    list_display = (
        "job_name",
        "trigger",
        "status",
        "fire_time_s",
        "started_at",
        "duration_s",
        "lateness_s",
        "worker",
    )
    list_filter = ("status", "trigger", "started_at", "job")
    search_fields = ("job_name", "task", "exception")
    list_select_related = False
    show_full_result_count = False
    readonly_fields = (
        "job",
        "job_name",
        "task",
        "trigger",
        "status",
        "fire_time_s",
        "started_at",
        "finished_at",
        "duration",
        "lateness_s",
        "worker",
        "result",
        "exception",
        "traceback_block",
        "task_result_link",
    )
    exclude = ("traceback", "task_result")

    @admin.display(description=_("scheduled at"), ordering="scheduled_at")
    def fire_time_s(self, execution: JobExecution) -> str | dt.datetime | None:
        """The fire time; for a summary of fire times beat did not send, their span."""
        if execution.scheduled_at is None or execution.missed_until is None:
            return execution.scheduled_at
        first = timezone.localtime(execution.scheduled_at)
        last = timezone.localtime(execution.missed_until)
        return _("missed %(count)s fire times, %(first)s to %(last)s") % {
            "count": execution.missed_count,
            "first": first.strftime("%Y-%m-%d %H:%M:%S"),
            "last": last.strftime(
                "%H:%M:%S" if last.date() == first.date() else "%Y-%m-%d %H:%M:%S"
            ),
        }

    @admin.display(description=_("duration (s)"), ordering="duration")
    def duration_s(self, execution: JobExecution) -> str:
        return f"{execution.duration:.3f}" if execution.duration is not None else "—"

    @admin.display(description=_("lateness (s)"))
    def lateness_s(self, execution: JobExecution) -> str:
        late = execution.lateness
        return f"{late:.3f}" if late is not None else "—"

    @admin.display(description=_("traceback"))
    def traceback_block(self, execution: JobExecution) -> str:
        return format_html("<pre>{}</pre>", execution.traceback) if execution.traceback else "—"

    @admin.display(description=_("Celery task result"))
    def task_result_link(self, execution: JobExecution) -> str:
        if not execution.task_result_id:
            return "—"
        url = reverse("admin:django_celery_results_taskresult_changelist")
        return format_html(
            '<a href="{}?task_id={}">{}</a>',
            url,
            execution.task_result_id,
            execution.task_result_id,
        )


@admin.register(JobChange)
class JobChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail, read-only and never deleted from the admin."""

    list_display = ("at", "job_name", "action", "source", "actor", "summary")
    list_filter = ("action", "source", "job")
    search_fields = ("job_name", "actor")
    readonly_fields = ("job", "job_name", "action", "source", "actor", "at", "changes")

    @admin.display(description=_("changes"))
    def summary(self, change: JobChange) -> str:
        return _describe_changes(change)[:300]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Alerts and recovery notices, with how each delivery went."""

    list_display = ("created_at", "job_name", "kind", "state", "message", "delivered")
    list_filter = ("kind", "state", "job")
    search_fields = ("job_name", "message")
    readonly_fields = (
        "job",
        "job_name",
        "kind",
        "state",
        "message",
        "created_at",
        "delivery_attempts",
    )

    @admin.display(description=_("delivered"), boolean=True)
    def delivered(self, alert: Alert) -> bool | None:
        """Whether every recipient was reached by some attempt (None: none made yet)."""
        if not alert.deliveries:
            return None
        reached: dict[str, bool] = {}
        for item in alert.deliveries:
            key = f"{item.get('channel')} {item.get('to')}"
            reached[key] = reached.get(key, False) or bool(item.get("ok"))
        return all(reached.values())

    @admin.display(description=_("deliveries"))
    def delivery_attempts(self, alert: Alert) -> str:
        if not alert.deliveries:
            return _("None yet: the delivery is queued.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    item.get("attempt", "—"),
                    item.get("at", "—"),
                    item.get("channel", ""),
                    ", ".join(item["to"]) if isinstance(item.get("to"), list) else item.get("to"),
                    "✔" if item.get("ok") else "✘",
                    " ".join(str(item[k]) for k in ("status", "error") if item.get(k)),
                )
                for item in alert.deliveries
            ),
        )
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>"
            "{}</table>",
            _("attempt"),
            _("when"),
            _("channel"),
            _("to"),
            _("ok"),
            _("answer"),
            rows,
        )


@admin.register(SchedulerLease)
class SchedulerLeaseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Which beat dispatches (the others stand by); written by the beats only."""

    list_display = ("name", "holder", "token", "acquired_at", "expires_at")
    readonly_fields = list_display

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BeatHeartbeat)
class BeatHeartbeatAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every beat process seen, leader or standby, and when it last ran its loop."""

    list_display = ("name", "started_at", "last_tick_at")
    readonly_fields = list_display
    ordering = ("-last_tick_at",)
