"""Admin pages: jobs (edit, pause, resume, run now with options, backfill, preview),
executions (read-only; waiting runs can be dropped, past runs re-run) and backfills
(read-only; cancellable).

Thin by design: every write goes through :mod:`scheduling.services`.
"""

import datetime as dt
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.i18n import JavaScriptCatalog
from django_celery_beat import models as beat_models

from scheduling import (
    backfills,
    calendar_services,
    chain_services,
    charts,
    display,
    explain,
    group_services,
    masking,
    registry,
    schedules,
    selectors,
    services,
)
from scheduling.audit import audit_context
from scheduling.models import (
    Alert,
    ApiKey,
    ApiPrivilege,
    Backfill,
    BackfillReprocess,
    BackfillRunState,
    BeatHeartbeat,
    Calendar,
    CalendarRule,
    ExecutionStatus,
    Job,
    JobAlertStatus,
    JobChange,
    JobExecution,
    JobGroup,
    JobLink,
    OverlapPolicy,
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

# The lists need the width of a 1366 px screen: the header links and the home page
# navigate instead of the side bar of every model.
admin.site.enable_nav_sidebar = False


def _paused_words(job: Job) -> str:
    """``paused by alice until 2026-12-24 06:00:00 +08:00: upstream down``, as known."""
    words = str(_("paused"))
    if job.paused_by:
        words += " " + str(_("by %(who)s") % {"who": job.paused_by})
    if job.resume_at:
        words += " " + str(
            _("until %(when)s") % {"when": display.exact(job.resume_at, job.timezone)}
        )
    if job.pause_reason:
        words += f": {job.pause_reason}"
    return words


#: The form's date-times, typed as wall-clock times in the job's timezone.
LOCAL_DATETIME_FIELDS = ("run_at", "start_at", "end_at")


def _in_job_timezone(moment, tz_name: str):
    """Read the wall-clock time the operator typed (parsed in the server's timezone) in the
    job's timezone instead, by the cron rules' daylight-saving policy
    (:func:`scheduling.schedules.wall_clock_moment`)."""
    naive = timezone.make_naive(moment, timezone.get_current_timezone())
    return schedules.wall_clock_moment(naive, tz_name)


def _describe_changes(change: JobChange) -> str:
    """An audit entry's changes in one line: ``field: old → new; …`` (a note that is not a
    pair, such as a reason, as it is)."""
    return "; ".join(
        f"{k}: {v[0]!r} → {v[1]!r}" if isinstance(v, list) and len(v) == 2 else f"{k}: {v}"
        for k, v in change.changes.items()
    )


def _swap(field: str) -> str:
    return "masked_kwargs" if field == "kwargs" else field


def _window_words(job: Job) -> str:
    """The validity window in words: "From … until …; 2 of 3 runs left." (empty: none)."""
    parts = []
    if job.start_at:
        parts.append(_("From %(start)s") % {"start": display.exact(job.start_at, job.timezone)})
    if job.end_at:
        parts.append(_("Until %(end)s") % {"end": display.exact(job.end_at, job.timezone)})
    if job.max_runs is not None:
        parts.append(
            _("%(left)d of %(max)d runs left") % {"left": job.runs_remaining, "max": job.max_runs}
        )
    return "; ".join(str(part) for part in parts)


def clipped_column(field: str, description) -> object:
    """A list column showing ``field`` cut to the column's width, whole on hover."""

    @admin.display(description=description, ordering=field)
    def column(self, obj) -> str:
        return display.clipped(getattr(obj, field))

    return column


def moment_column(field: str, description) -> object:
    """A list column showing the run's time ``field`` to the second in its job's zone."""

    @admin.display(description=description, ordering=field)
    def column(self, execution: JobExecution) -> str:
        return display.moment_html(getattr(execution, field), display.run_zone(execution))

    return column


class JobZoneTimesMixin:
    """Live times, and the model's own date-times shown as every other time here.

    A date-time field shown read-only (a job's next and last run, created and updated; a
    run's sent time; every one on a page its user may only view) is shown to the second in
    the job's timezone with its offset, UTC on hover (:func:`scheduling.display.moment_html`),
    where the stock read-only field shows it in the server's zone to the minute: a
    ``<field>_zoned`` callable of the admin takes the field's place in the fieldsets (with
    the field's label and help text), and the field stays out of the form.

    The pages load the JavaScript catalog and ``live_times.js``, which keeps their
    relative times live."""

    ZONED = "_zoned"

    def time_zone_of(self, obj) -> str | None:
        """The timezone of the object's job (``None``: the operator's)."""
        raise NotImplementedError

    def __init__(self, model, admin_site):
        super().__init__(model, admin_site)
        self.zoned_fields = {
            f.name: f for f in model._meta.concrete_fields if isinstance(f, models.DateTimeField)
        }
        for field in self.zoned_fields.values():
            setattr(self, field.name + self.ZONED, self._zoned_column(field))

    def _zoned_column(self, field):
        @admin.display(description=field.verbose_name, ordering=field.name)
        def column(obj) -> str:
            return display.moment_html(getattr(obj, field.name), self.time_zone_of(obj))

        return column

    @property
    def media(self):
        return super().media + forms.Media(
            js=[reverse("admin:scheduling_jsi18n"), "scheduling/live_times.js"]
        )

    def get_readonly_fields(self, request, obj=None):
        # Every alias is read-only: never a form field, whichever the page shows.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, *(name + self.ZONED for name in self.zoned_fields)]

    def get_fields(self, request, obj=None):
        return [f for f in super().get_fields(request, obj) if not f.endswith(self.ZONED)]

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):
            shown_read_only = set(self.zoned_fields)  # a view-only page: every field
        else:
            shown_read_only = set(super().get_readonly_fields(request, obj))
        swapped = {name: name + self.ZONED for name in self.zoned_fields if name in shown_read_only}
        return [
            (
                title,
                {
                    **options,
                    "fields": list(dict.fromkeys(swapped.get(f, f) for f in options["fields"])),
                },
            )
            for title, options in super().get_fieldsets(request, obj)
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        help_texts = {
            name + self.ZONED: field.help_text for name, field in self.zoned_fields.items()
        }
        help_texts.update(getattr(getattr(self.form, "Meta", None), "help_texts", None) or {})
        return super().get_form(request, obj, change=change, help_texts=help_texts, **kwargs)


class ReadOnlyAdminMixin:
    """Records written by the product itself: viewed in the admin, never added or edited."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RunsInProgressMixin:
    """A change page that lists runs in progress with their live progress and, for a user
    who may (``scheduling.cancel_run``), buttons that cancel or terminate them."""

    change_form_template = "scheduling/admin/change_form_runs.html"

    def runs_in_progress(self, obj) -> list[JobExecution]:
        raise NotImplementedError

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id) if object_id.isdigit() else None
        runs = self.runs_in_progress(obj) if obj is not None else []
        extra = {
            "show_runs_in_progress": obj is not None and self.shows_runs(obj, runs),
            "runs_in_progress": runs,
            "may_cancel_runs": request.user.has_perm("scheduling.cancel_run"),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def shows_runs(self, obj, runs: list[JobExecution]) -> bool:
        return True


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
        for name in LOCAL_DATETIME_FIELDS:
            if name not in self.fields:
                continue
            stored = getattr(self.instance, name)
            if stored and self.instance.timezone in schedules.available_timezones():
                # Shown as the wall-clock time in the job's timezone, not the server's.
                tz = schedules.get_timezone(self.instance.timezone)
                self.initial[name] = stored.astimezone(tz).replace(tzinfo=None)
            if name == "run_at":
                self.fields[name].help_text = _("Date and time in the job's timezone.")
            else:
                self.fields[name].help_text = format_html(
                    "{} {}", self.fields[name].help_text, _("In the job's timezone.")
                )
        if "overlap" in self.fields:
            self.fields["overlap"].widget.attrs["data-ignored-note"] = _(
                "Ignored: the overlap policy allow all sets no limit."
            )
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
        tz_name = cleaned.get("timezone")
        for name in LOCAL_DATETIME_FIELDS:
            moment = cleaned.get(name)
            if not moment or tz_name not in schedules.available_timezones():
                continue
            try:
                cleaned[name] = _in_job_timezone(moment, tz_name)
            except (OverflowError, ValueError):
                self.add_error(name, _("The date is out of range."))
                cleaned.pop(name, None)
            else:
                setattr(self.instance, name, cleaned[name])
        return cleaned


class PauseForm(forms.Form):
    """Why the selected jobs are paused and, optionally, when they resume by themselves."""

    reason = forms.CharField(
        label=_("Reason"),
        max_length=Job._meta.get_field("pause_reason").max_length,
        required=False,
        widget=forms.TextInput(attrs={"size": 60}),
    )
    until = forms.DateTimeField(
        label=_("Resume at"),
        required=False,
        help_text=_(
            "Optional: YYYY-MM-DD HH:MM:SS, in the server's timezone. Empty: until resumed."
        ),
    )

    def clean_until(self):
        until = self.cleaned_data["until"]
        if until is not None and until <= timezone.now():
            raise forms.ValidationError(_("The resume time has already passed."))
        return until


def _service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Put a service's refusal on the form's fields it names (else on the form)."""
    for field, problems in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, problems)


OVERLAP_CHOICES = [("", _("The job's own")), *OverlapPolicy.choices]


class RunNowForm(forms.Form):
    """Options of one manual run: keyword arguments over the job's, a logical time, an
    overlap policy (all optional: empty runs it as the job says)."""

    kwargs = forms.JSONField(
        label=_("Keyword arguments"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_(
            "For this run only, over the job's (a key given replaces the job's), e.g. "
            "{\"days\": 30}; a masked value keeps the job's secret. Empty: the job's."
        ),
    )
    logical_at = forms.DateTimeField(
        label=_("Logical time"),
        required=False,
        help_text=_(
            "The scheduled time the run sees: YYYY-MM-DD HH:MM:SS in the server's timezone. "
            "Empty: now."
        ),
    )
    overlap = forms.ChoiceField(label=_("Overlap policy"), choices=OVERLAP_CHOICES, required=False)


class BackfillForm(forms.Form):
    """The range and choices of a backfill (``jobs backfill``'s options)."""

    start = forms.CharField(
        label=_("From"), help_text=_("First fire time, inclusive: YYYY-MM-DD HH:MM:SS.")
    )
    end = forms.CharField(label=_("Until"), help_text=_("Exclusive: YYYY-MM-DD HH:MM:SS."))
    timezone = forms.CharField(
        label=_("Timezone"), help_text=_("Of the two times, unless they carry an offset.")
    )
    reprocess = forms.ChoiceField(
        label=_("Reprocess"), choices=BackfillReprocess.choices, initial="missing"
    )
    overlap = forms.ChoiceField(label=_("Overlap policy"), choices=OVERLAP_CHOICES, required=False)

    def clean(self):
        data = super().clean()
        tz_name = data.get("timezone")
        if tz_name:
            try:
                schedules.get_timezone(tz_name)
            except ValueError as exc:
                self.add_error("timezone", str(exc))
                return data
            for name in ("start", "end"):
                if data.get(name):
                    try:
                        data[name] = schedules.parse_moment(data[name], tz_name)
                    except ValueError as exc:
                        self.add_error(name, str(exc))
        return data


class JobLinkFormSet(forms.BaseInlineFormSet):
    """The job's chain links as one whole: checked together (a next job named twice, a
    cycle named) before anything is saved, then saved through the chain service."""

    def specs(self) -> list[chain_services.LinkSpec]:
        return [
            chain_services.LinkSpec(
                job=form.cleaned_data["downstream"].name,
                condition=form.cleaned_data.get("condition") or "success",
                pass_result_as=form.cleaned_data.get("pass_result_as") or "",
            )
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("downstream")
        ]

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        specs = self.specs()
        problems = chain_services.links_problems(
            {self.instance.name: specs},
            {spec.job for spec in specs},
            chain_services.stored_graph(exclude=[self.instance.name]),
        )
        if problems:
            raise ValidationError(problems)


class JobLinkInline(admin.TabularInline):
    """The jobs this job's finished runs start (chain), on the job's page; editing them
    needs the permission to change (or add) the job, as any other field of it."""

    model = JobLink
    formset = JobLinkFormSet
    fk_name = "upstream"
    fields = ("downstream", "condition", "pass_result_as")
    autocomplete_fields = ("downstream",)
    extra = 0
    verbose_name = _("next job")
    verbose_name_plural = _("Chain: jobs this job starts")

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("scheduling.view_job") or self._may_edit(request, obj)

    def has_add_permission(self, request, obj=None):
        return self._may_edit(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._may_edit(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may_edit(request, obj)

    def _may_edit(self, request, obj) -> bool:
        perm = "scheduling.add_job" if obj is None else "scheduling.change_job"
        return request.user.has_perm(perm)


@admin.register(Job)
class JobAdmin(JobZoneTimesMixin, RunsInProgressMixin, admin.ModelAdmin):
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
    list_per_page = 50
    search_fields = ("name", "description", "task", "group")
    actions = ("pause_jobs", "resume_jobs", "run_jobs_now", "skip_next_runs")
    autocomplete_fields = ("calendars",)
    inlines = (JobLinkInline,)
    status_fields = (
        "next_run_at",
        "last_run_at",
        "last_status",
        "last_duration",
        "total_run_count",
        "consecutive_failures",
        *Job.PAUSE_FIELDS,
        "created_at",
        "updated_at",
    )
    #: At the top of a job's page: its recent runs, statistics and alert state.
    OVERVIEW_FIELDS = ("recent_runs", "next_runs", "statistics", "alert_state")
    readonly_fields = (
        *OVERVIEW_FIELDS,
        "recent_changes",
        "started_by_jobs",
        "schedule_preview",
        "fire_time_fates",
        "runs_left",
        "waiting_runs",
        "run_control_links",
        *status_fields,
    )
    fieldsets = (
        (_("Overview"), {"fields": OVERVIEW_FIELDS}),
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
        (_("Validity"), {"fields": (*Job.WINDOW_FIELDS, "runs_left")}),
        (_("Exclusion calendars"), {"fields": ("calendars",)}),
        (_("Chain"), {"fields": ("started_by_jobs",)}),
        (_("Schedule preview"), {"fields": ("schedule_preview",)}),
        (
            _("Execution options"),
            {
                "fields": (
                    "coalesce",
                    "max_instances",
                    "overlap",
                    "misfire_grace_time",
                    "jitter",
                    "pause_after_failures",
                )
            },
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
        (_("Status"), {"fields": ("waiting_runs", "run_control_links", *status_fields)}),
        (
            _("Why did (or didn't) it run?"),
            {"fields": ("fire_time_fates",), "classes": ("collapse",)},
        ),
        (_("Audit trail"), {"fields": ("recent_changes",), "classes": ("collapse",)}),
    )

    class Media:
        css = {"all": ("scheduling/console.css",)}
        js = ("scheduling/job_form.js",)

    def runs_in_progress(self, job: Job) -> list[JobExecution]:
        return list(selectors.execution_in_progress_list(job=job))

    def time_zone_of(self, obj: Job) -> str | None:
        return obj.timezone

    # --- list columns ---------------------------------------------------------------------
    @admin.display(description=_("trigger"))
    def trigger_words(self, job: Job) -> str:
        return display.clipped(job.describe_trigger())

    @admin.display(description=_("next run"), ordering="next_run_at")
    def next_run(self, job: Job) -> str:
        if not job.enabled:
            return display.clipped(_paused_words(job))
        return display.moment_html(job.next_run_at, job.timezone, relative_to_now=True)

    @admin.display(description=_("last run"), ordering="last_run_at")
    def last_outcome(self, job: Job) -> str:
        """The last outcome as a badge, when (relative) and how long it took."""
        if not job.last_status:
            return display.EMPTY
        return format_html(
            '{} {} <span class="duration">{}</span>',
            display.badge(job.last_status),
            display.moment_html(job.last_run_at, job.timezone, relative_to_now=True),
            display.duration(job.last_duration) if job.last_duration is not None else "",
        )

    @admin.display(description=_("executions"))
    def executions_link(self, job: Job) -> str:
        url = reverse("admin:scheduling_jobexecution_changelist") + f"?job__id__exact={job.pk}"
        return format_html('<a href="{}">{}</a>', url, _("history"))

    @admin.display(description=_("started by"))
    def started_by_jobs(self, job: Job) -> str:
        """The jobs whose finished runs start this one (the jobs it starts are the
        inline table below)."""
        if job.pk is None:
            return "—"
        links = job.links_in.select_related("upstream").order_by("upstream__name")
        return format_html_join(
            ", ",
            '<a href="{}">{}</a> ({})',
            (
                (
                    reverse("admin:scheduling_job_change", args=[link.upstream_id]),
                    link.upstream.name,
                    link.get_condition_display(),
                )
                for link in links
            ),
        ) or _("No job starts this one.")

    @admin.display(description=_("recent changes"))
    def recent_changes(self, job: Job) -> str:
        if job.pk is None:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    display.exact(change.at),
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

    @admin.display(description=_("fire times"))
    def fire_time_fates(self, job: Job) -> str:
        if job.pk is None:
            return "—"
        report = explain.job_explain(job=job, recent=10, upcoming=5)
        rows = format_html_join(
            "",
            '<tr class="fate-{}"><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    fate["fate"],
                    display.exact(dt.datetime.fromisoformat(fate["scheduled_at"]), job.timezone),
                    explain.FATE_LABELS[fate["fate"]]
                    + (f" ({ExecutionStatus(fate['status']).label})" if fate["status"] else ""),
                    fate["detail"][:300],
                )
                for fate in [*report["recent"], *report["upcoming"]]
            ),
        )
        return format_html(
            "{}<table><tr><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>",
            format_html("<p>{}</p>", report["paused"]) if report["paused"] else "",
            _("fire time"),
            _("fate"),
            _("why"),
            rows,
        )

    @admin.display(description=_("last 50 runs"))
    def recent_runs(self, job: Job) -> str:
        """The last 50 runs as coloured ticks, oldest first; each names its time, outcome
        and duration on hover and opens the run."""
        if job.pk is None:
            return display.EMPTY
        runs = list(selectors.execution_list(job=job)[:50])[::-1]
        ticks = format_html_join(
            "",
            '<a class="tick" href="{}" style="background-color: {}" title="{}"></a>',
            (
                (
                    reverse("admin:scheduling_jobexecution_change", args=[run.pk]),
                    charts.COLORS.get(run.status, "#417690"),
                    f"{display.exact(run.scheduled_at or run.started_at, job.timezone)} · "
                    f"{run.get_status_display()} · {display.duration(run.duration)}",
                )
                for run in runs
            ),
        )
        return format_html('<div id="run-strip">{}</div>', ticks or _("No runs yet."))

    @admin.display(description=_("next runs"))
    def next_runs(self, job: Job) -> str:
        """The next 5 fire times, relative, exact on hover (paused: why)."""
        if not job.enabled:
            return _paused_words(job)
        runs = selectors.job_upcoming_runs(job=job, count=5)
        return format_html_join(
            " · ",
            "{}",
            ((display.moment_html(run, job.timezone, relative_to_now=True),) for run in runs),
        ) or _("No upcoming runs.")

    @admin.display(description=_("statistics"))
    def statistics(self, job: Job) -> str:
        """Runs, success rate and durations over the last 24 hours and 7 days."""
        if job.pk is None:
            return display.EMPTY
        rows = []
        for window, label in (("day", _("24 h")), ("week", _("7 days"))):
            since, until = selectors.window_bounds(window=window)
            stats = selectors.job_statistics(job=job, since=since, until=until)
            rate = stats["success_rate"]
            rows.append(
                (
                    label,
                    stats["runs"],
                    f"{rate:.0%}" if rate is not None else display.EMPTY,
                    stats["failures"],
                    stats["missed"],
                    display.duration(stats["avg"]),
                    display.duration(stats["p95"]),
                    display.duration(stats["max"]),
                )
            )
        return format_html(
            '<table id="job-statistics"><tr><th></th><th>{}</th><th>{}</th><th>{}</th>'
            "<th>{}</th><th>{}</th><th>p95</th><th>{}</th></tr>{}</table>",
            _("runs"),
            _("success rate"),
            _("failures"),
            _("missed"),
            _("average"),
            _("max"),
            format_html_join("", "<tr>" + "<td>{}</td>" * 8 + "</tr>", rows),
        )

    @admin.display(description=_("alert state"))
    def alert_state(self, job: Job) -> str:
        """Each kind of alert firing for the job, since when; or that none is."""
        if job.pk is None:
            return display.EMPTY
        firing = job.alert_status.filter(firing=True).order_by("kind")
        if not firing:
            return format_html('<span id="alert-state">{}</span>', _("No alert firing."))
        return format_html(
            '<span id="alert-state">{}</span>',
            format_html_join(
                " ",
                "{} {}",
                (
                    (
                        display.badge("failure", status.get_kind_display()),
                        _("since %(when)s") % {"when": display.exact(status.since, job.timezone)},
                    )
                    for status in firing
                ),
            ),
        )

    @admin.display(description=_("waiting runs"))
    def waiting_runs(self, job: Job) -> str:
        """The runs that wait for a free slot, linked to the executions list where they
        can be dropped."""
        if job.pk is None:
            return "—"
        count = selectors.execution_waiting_list(job=job).count()
        url = reverse("admin:scheduling_jobexecution_changelist") + (
            f"?job__id__exact={job.pk}&status__exact={ExecutionStatus.WAITING}"
        )
        return format_html(
            '<a href="{}">{}</a>',
            url,
            ngettext("%(n)d run waiting", "%(n)d runs waiting", count) % {"n": count},
        )

    @admin.display(description=_("schedule preview"))
    def schedule_preview(self, job: Job) -> str:
        if job.pk is None:
            return _("Shown as you type, and after saving.")
        runs = selectors.job_upcoming_runs(job=job, count=5)
        items = format_html_join(
            "", "<li>{}</li>", ((display.exact(r, job.timezone),) for r in runs)
        )
        excluded = format_html_join(
            "",
            "<li>{}</li>",
            (
                (
                    _("%(count)d fire time(s) from %(first)s to %(last)s excluded by %(calendar)s")
                    % {
                        "count": entry["count"],
                        "first": entry["from"],
                        "last": entry["until"],
                        "calendar": entry["calendar"]
                        + (f" ({entry['label']})" if entry["label"] else ""),
                    },
                )
                for entry in calendar_services.job_excluded_upcoming(job=job, count=5)
            ),
        )
        return format_html(
            '<div id="schedule-preview"><p class="trigger">{}</p><ol>{}</ol>'
            '<ul class="excluded">{}</ul><p>{}</p></div>',
            job.describe_trigger(),
            items or _("No upcoming runs."),
            excluded,
            _window_words(job),
        )

    @admin.display(description=_("runs left"))
    def runs_left(self, job: Job) -> str:
        if job.max_runs is None:
            return _("No limit (%(sent)d scheduled runs sent).") % {"sent": job.scheduled_run_count}
        return _("%(left)d of %(max)d (%(sent)d scheduled runs sent).") % {
            "left": job.runs_remaining,
            "max": job.max_runs,
            "sent": job.scheduled_run_count,
        }

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
        if obj is None:  # a new job has no runs to overview
            return [(t, o) for t, o in fieldsets if o["fields"] != self.OVERVIEW_FIELDS]
        if self.has_change_permission(request, obj):
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

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if "calendars" in form.changed_data:
            calendar_services.job_calendars_changed(job=form.instance)

    def save_formset(self, request, form, formset, change):
        if isinstance(formset, JobLinkFormSet):
            chain_services.job_set_links(job=form.instance, links=formset.specs())
            # The audit trail has the change; the admin's own log message lists none.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            return
        super().save_formset(request, form, formset, change)

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
        """Ask why and until when, then pause the selected jobs."""
        form = PauseForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            reason, until = form.cleaned_data["reason"], form.cleaned_data["until"]
            done = self._each(
                request,
                queryset,
                lambda job: services.job_pause(job=job, reason=reason, until=until),
            )
            self.message_user(
                request, ngettext("%(n)d job paused.", "%(n)d jobs paused.", done) % {"n": done}
            )
            return None
        return TemplateResponse(
            request,
            "scheduling/pause.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Pause jobs"),
                "opts": self.model._meta,
                "jobs": queryset,
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description=_("Resume selected jobs"), permissions=["pause"])
    def resume_jobs(self, request, queryset: QuerySet[Job]):
        done = self._each(request, queryset, services.job_resume)
        self.message_user(
            request, ngettext("%(n)d job resumed.", "%(n)d jobs resumed.", done) % {"n": done}
        )

    @admin.action(description=_("Run selected jobs now"), permissions=["run"])
    def run_jobs_now(self, request, queryset: QuerySet[Job]):
        """Ask for this run's options (all optional), then send one run of each job."""
        return self._run_now_page(request, list(queryset), action="run_jobs_now")

    def _run_now_page(self, request, jobs: list[Job], *, action: str = ""):
        form = RunNowForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            options = {
                "kwargs": form.cleaned_data["kwargs"],
                "logical_at": form.cleaned_data["logical_at"],
                "overlap": form.cleaned_data["overlap"] or None,
                "user": request.user,
            }
            try:
                for job in jobs:  # checked on each before any is sent
                    with transaction.atomic():
                        services.job_run_now(job=job, **options)
                        transaction.set_rollback(True)
            except ValidationError as exc:
                _service_errors(form, exc)
            else:
                done = self._each(
                    request, jobs, lambda job: services.job_run_now(job=job, **options)
                )
                self.message_user(
                    request,
                    ngettext(
                        "%(n)d run sent to the workers.", "%(n)d runs sent to the workers.", done
                    )
                    % {"n": done},
                )
                if not action:
                    return HttpResponseRedirect(
                        reverse("admin:scheduling_job_change", args=[jobs[0].pk])
                    )
                return None
        if not form.is_bound and len(jobs) == 1 and jobs[0].kwargs:
            form.initial["kwargs"] = masking.mask(jobs[0].kwargs)
        return TemplateResponse(
            request,
            "scheduling/run_now.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Run now"),
                "opts": self.model._meta,
                "jobs": jobs,
                "form": form,
                "action": action,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def run_now_view(self, request: HttpRequest, pk: int):
        """One job's run-now form (linked from its page)."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        job = Job.objects.filter(pk=pk).first()
        if job is None:
            return HttpResponseRedirect(reverse("admin:scheduling_job_changelist"))
        with audit_context(source="admin", actor=request.user.get_username()):
            return self._run_now_page(request, [job])

    def backfill_view(self, request: HttpRequest, pk: int):
        """One job's backfill: the range and choices, a preview (dry run) of each fire
        time with what is on record for it, and the start."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        job = Job.objects.filter(pk=pk).first()
        if job is None:
            return HttpResponseRedirect(reverse("admin:scheduling_job_changelist"))
        bound = request.method == "POST"
        form = BackfillForm(request.POST if bound else None, initial={"timezone": job.timezone})
        preview = None
        if bound and form.is_valid():
            data = form.cleaned_data
            try:
                with audit_context(source="admin", actor=request.user.get_username()):
                    backfill = services.job_backfill(
                        job=job,
                        start=data["start"],
                        end=data["end"],
                        reprocess=data["reprocess"],
                        overlap=data["overlap"] or None,
                        dry_run="start_backfill" not in request.POST,
                        by=request.user,
                        tz_name=data["timezone"],
                    )
            except ValidationError as exc:
                _service_errors(form, exc)
            else:
                if backfill.pk is not None:
                    self.message_user(
                        request,
                        _("Backfill %(id)s started: %(count)d runs to send.")
                        % {"id": backfill.pk, "count": backfill.pending_count},
                    )
                    return HttpResponseRedirect(
                        reverse("admin:scheduling_backfill_change", args=[backfill.pk])
                    )
                preview = backfills.plan_json(backfill, data["timezone"])
        return TemplateResponse(
            request,
            "scheduling/backfill.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Backfill %(job)s") % {"job": job.name},
                "opts": self.model._meta,
                "job": job,
                "form": form,
                "preview": preview,
            },
        )

    @admin.display(description=_("Run control"))
    def run_control_links(self, job: Job) -> str:
        """Links to run the job now with options, to backfill it, and to its backfills."""
        if job.pk is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a> · <a href="{}?job__id__exact={}">{}</a>',
            reverse("admin:scheduling_job_run_now", args=[job.pk]),
            _("Run now with options..."),
            reverse("admin:scheduling_job_backfill", args=[job.pk]),
            _("Backfill..."),
            reverse("admin:scheduling_backfill_changelist"),
            job.pk,
            _("Its backfills"),
        )

    @admin.action(description=_("Skip the next run of selected jobs"), permissions=["pause"])
    def skip_next_runs(self, request, queryset: QuerySet[Job]):
        done = self._each(request, queryset, calendar_services.job_skip_next)
        self.message_user(
            request,
            ngettext("%(n)d next run skipped.", "%(n)d next runs skipped.", done) % {"n": done},
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
        run_now = path(
            "<int:pk>/run/",
            self.admin_site.admin_view(self.run_now_view),
            name="scheduling_job_run_now",
        )
        backfill = path(
            "<int:pk>/backfill/",
            self.admin_site.admin_view(self.backfill_view),
            name="scheduling_job_backfill",
        )
        # The app's strings for its scripts (live relative times), in the page's language:
        # served under the admin, so a project adding the app needs no URL of its own.
        catalog = path(
            "jsi18n/",
            self.admin_site.admin_view(JavaScriptCatalog.as_view(packages=["scheduling"])),
            name="scheduling_jsi18n",
        )
        return [preview, dashboard, run_now, backfill, catalog, *super().get_urls()]

    #: The dashboard's windows, as the select names them.
    DASHBOARD_WINDOWS = {
        "hour": _("1 h"),
        "day": _("24 h"),
        "week": _("7 days"),
        "month": _("30 days"),
    }

    def dashboard_view(self, request: HttpRequest):
        """Charts in the operator's timezone (the one chosen on the page, kept in the
        session; else the server's) over a window (1 h … 30 days): slowest jobs,
        outcomes per day, failures per job, fire times by minute of the hour, one job's
        durations; missed fire times apart, one line per cause; upcoming runs."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        zone = self._operator_zone(request)
        with timezone.override(zone):
            response = self._dashboard(request, zone)
            response.render()  # its times and charts in the operator's zone
        return response

    #: Where the dashboard keeps the timezone its operator chose.
    ZONE_SESSION_KEY = "scheduling_dashboard_timezone"

    def _operator_zone(self, request: HttpRequest) -> str:
        """The timezone the operator chose for the dashboard (``?zone=``, kept in the
        session; empty: back to the server's), else the server's."""
        chosen = request.GET.get("zone")
        if chosen == "":
            request.session.pop(self.ZONE_SESSION_KEY, None)
        elif chosen is not None and chosen in schedules.available_timezones():
            request.session[self.ZONE_SESSION_KEY] = chosen
        elif chosen is not None:
            self.message_user(
                request,
                _("Unknown timezone %(zone)s: choose one from the list.") % {"zone": chosen},
                messages.ERROR,
            )
        stored = request.session.get(self.ZONE_SESSION_KEY)
        if stored in schedules.available_timezones():
            return stored
        return timezone.get_default_timezone_name()

    def _dashboard(self, request: HttpRequest, zone: str) -> TemplateResponse:
        window = request.GET.get("window", "day")
        if window not in self.DASHBOARD_WINDOWS:
            window = "day"
        since, until = selectors.window_bounds(window=window)
        slow = selectors.slow_jobs(since=since, until=until, threshold=0)[:15]
        # Missed fire times are shown apart, by cause: an outage is not a pile of failures.
        outcomes = [r for r in selectors.outcomes_per_day(days=14) if r["status"] != "missed"]
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
            [
                (display.exact(dt.datetime.fromisoformat(p["at"])), p["duration"], p["status"])
                for p in selectors.duration_series(job=job)
            ]
            if job
            else []
        )
        failures = selectors.failures_per_job(since=since, until=until)
        missed = [
            {
                **row,
                "first": display.moment_html(row["first"]),
                "last": display.moment_html(row["last"]),
            }
            for row in selectors.missed_by_cause(since=since, until=until)
        ]
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "title": _("Dashboard"),
            "opts": self.model._meta,
            "window": window,
            "windows": self.DASHBOARD_WINDOWS,
            "zone": f"{zone} ({display.offset(timezone.localtime(now))})",
            "zone_chosen": request.session.get(self.ZONE_SESSION_KEY, ""),
            "zones": sorted(schedules.available_timezones()),
            "server_zone": timezone.get_default_timezone_name(),
            "since": display.exact(since),
            "until": display.exact(until),
            "slow_chart": charts.horizontal_bars(
                [(row["job"], row["avg"]) for row in slow], title=str(_("Slowest jobs (average)"))
            ),
            "outcome_chart": charts.stacked_columns(days, series, title=str(_("Outcomes per day"))),
            "failure_chart": charts.horizontal_bars(
                [(row["job"], row["failures"]) for row in failures],
                title=str(_("Failures per job")),
                unit="",
            ),
            "heat_map": charts.heat_map(
                selectors.fire_time_heat_map(since=since, until=until),
                title=str(_("Fire times by minute of the hour")),
                unit=str(_("runs")),
            ),
            "duration_chart": charts.line(points, title=str(_("Duration over time"))),
            "missed": missed,
            "job": job,
            "jobs": Job.objects.order_by("name").values_list("name", flat=True),
            "stats": stats,
            "stats_shown": {
                key: display.duration(stats[key])
                for key in ("min", "avg", "max", "p50", "p95", "p99")
            }
            if stats
            else None,
            "slow_report": [
                {**row, "avg": display.duration(row["avg"]), "max": display.duration(row["max"])}
                for row in selectors.slow_jobs(since=since, until=until)
            ],
            "upcoming": [
                (upcoming, display.moment_html(upcoming.next_run_at, upcoming.timezone))
                for upcoming in selectors.upcoming_runs()
            ],
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
            job.scheduled_run_count = stored.scheduled_run_count
        try:
            if data.get("interval_every"):
                job.interval_every = int(data["interval_every"])
            for name in LOCAL_DATETIME_FIELDS:
                if data.get(name):
                    moment = forms.DateTimeField().clean(data[name])
                    setattr(job, name, _in_job_timezone(moment, job.timezone))
            if data.get("max_runs"):
                job.max_runs = forms.IntegerField(min_value=1).clean(data["max_runs"])
            if job.start_at and job.end_at and job.end_at <= job.start_at:
                raise ValidationError(_("The end time must be after the start time."))
            job.trigger()
            runs = selectors.job_upcoming_runs(job=job, count=5)
        except (ValueError, ValidationError, OverflowError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            return JsonResponse({"error": message}, status=400)
        return JsonResponse(
            {
                "description": job.describe_trigger(),
                "next_runs": [display.exact(run, job.timezone) for run in runs],
                "window": _window_words(job),
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


class DropForm(forms.Form):
    """Why waiting runs are dropped (recorded on each, with who dropped it)."""

    reason = forms.CharField(label=_("reason"), max_length=300)


@admin.register(JobExecution)
class JobExecutionAdmin(
    JobZoneTimesMixin, RunsInProgressMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    """Every run, read-only: filter by job, outcome (waiting ones too), trigger and date; a run in progress
    shows its progress live and can be cancelled or terminated (``scheduling.cancel_run``);
    the runs waiting for a free slot can be dropped."""

    paginator = EstimatedCountPaginator
    actions = ("cancel_runs", "terminate_runs", "drop_waiting_runs", "rerun_runs")
    list_display = (
        "job_name_s",
        "trigger",
        "status_badge",
        "fire_time_s",
        "started_ago",
        "duration_s",
        "lateness_s",
        "worker_s",
        "reason_s",
    )
    list_display_links = ("job_name_s",)
    list_per_page = 50
    list_filter = ("status", "trigger", "started_at", "job")
    search_fields = ("job_name", "task", "exception")
    list_select_related = ("job",)  # its timezone; the other relations are not shown
    show_full_result_count = False
    readonly_fields = (
        "timeline",
        "related_runs",
        "job",
        "job_name",
        "task",
        "trigger",
        "status",
        "fire_time_s",
        "started_s",
        "finished_s",
        "duration_s",
        "lateness_s",
        "worker",
        "reason",
        "cancelled_by",
        "cancel_requested_at",
        "progress",
        "progress_message",
        "waiting_since",
        "parent",
        "children_runs",
        "masked_run_kwargs",
        "backfill",
        "sent_at",
        "result",
        "exception",
        "traceback_block",
        "task_result_link",
    )
    # The times are shown by the *_s fields (to the second in the job's zone) and the timeline.
    exclude = (
        "traceback",
        "task_result",
        "kwargs",
        "scheduled_at",
        "started_at",
        "finished_at",
        "duration",
    )

    def get_fields(self, request, obj=None):
        """The timeline and the related runs first: what a run's page is read for."""
        first = ["timeline", "related_runs"]
        return first + [f for f in super().get_fields(request, obj) if f not in first]

    @admin.display(description=_("runs it started"))
    def children_runs(self, execution: JobExecution) -> str:
        """The runs this one started (chain) and its re-runs, each linked."""
        children = execution.children.order_by("started_at")[:50]
        return (
            format_html_join(
                mark_safe("<br>"),
                '<a href="{}">{}</a> ({}, {})',
                (
                    (
                        reverse("admin:scheduling_jobexecution_change", args=[child.pk]),
                        child.job_name,
                        child.get_trigger_display(),
                        child.get_status_display(),
                    )
                    for child in children
                ),
            )
            or "—"
        )

    @admin.display(description=_("keyword arguments of this run"))
    def masked_run_kwargs(self, execution: JobExecution) -> str:
        """What the run was called with when not the job's own, secrets masked."""
        if execution.kwargs is None:
            return _("The job's own")
        return format_html("<pre>{}</pre>", json.dumps(masking.mask(execution.kwargs), indent=2))

    @admin.action(description=_("Re-run selected runs"), permissions=["run"])
    def rerun_runs(self, request, queryset: QuerySet[JobExecution]):
        """Send a new run of each selected one, with its arguments and scheduled time; a
        run that cannot be re-run is named, not a 500."""
        done = 0
        with audit_context(source="admin", actor=request.user.get_username()):
            for execution in queryset.select_related("job"):
                try:
                    services.execution_rerun(execution=execution, by=request.user)
                except ValidationError as exc:
                    self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                else:
                    done += 1
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(n)d re-run sent to the workers.", "%(n)d re-runs sent to the workers.", done
                )
                % {"n": done},
            )

    def changelist_view(self, request, *args, **kwargs):
        with audit_context(source="admin", actor=request.user.get_username()):
            return super().changelist_view(request, *args, **kwargs)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.run_job")

    @admin.action(description=_("Drop selected waiting runs"), permissions=["run"])
    def drop_waiting_runs(self, request, queryset: QuerySet[JobExecution]):
        """Ask why (a page listing the runs), then drop each waiting one; a run in any
        other state is named, not dropped."""
        form = DropForm(request.POST if "drop" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "scheduling/drop_runs.html",
                {
                    **self.admin_site.each_context(request),
                    "title": _("Drop waiting runs"),
                    "opts": self.model._meta,
                    "runs": queryset,
                    "form": form,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        done = 0
        for execution in queryset:
            try:
                services.execution_drop(
                    execution=execution,
                    by=request.user.get_username(),
                    reason=form.cleaned_data["reason"],
                )
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            else:
                done += 1
        self.message_user(
            request, ngettext("%(n)d run dropped.", "%(n)d runs dropped.", done) % {"n": done}
        )
        return None

    def runs_in_progress(self, execution: JobExecution) -> list[JobExecution]:
        return [execution] if execution.in_progress else []

    def shows_runs(self, execution: JobExecution, runs: list[JobExecution]) -> bool:
        return bool(runs)

    # --- cancel and terminate ------------------------------------------------------------
    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.cancel_run")

    @admin.action(description=_("Cancel selected runs"), permissions=["cancel"])
    def cancel_runs(self, request, queryset: QuerySet[JobExecution]):
        self._stop_each(request, queryset, terminate=False)

    @admin.action(description=_("Terminate selected runs"), permissions=["cancel"])
    def terminate_runs(self, request, queryset: QuerySet[JobExecution]):
        self._stop_each(request, queryset, terminate=True)

    def _stop_each(self, request, queryset, *, terminate: bool) -> int:
        """Cancel or terminate each run; one that is not in progress is named, not a 500."""
        done = 0
        with audit_context(source="admin", actor=request.user.get_username()):
            for execution in queryset:
                try:
                    services.execution_cancel(
                        execution=execution, terminate=terminate, by=request.user
                    )
                except ValidationError as exc:
                    self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                else:
                    done += 1
        if done:
            text = (
                ngettext("%(n)d run terminated.", "%(n)d runs terminated.", done)
                if terminate
                else ngettext(
                    "%(n)d run asked to stop (cancelled).",
                    "%(n)d runs asked to stop (cancelled).",
                    done,
                )
            )
            self.message_user(request, text % {"n": done})
        return done

    def get_urls(self):
        return [
            path(
                "<int:pk>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="scheduling_jobexecution_progress",
            ),
            path(
                "<int:pk>/stop/",
                self.admin_site.admin_view(self.stop_view),
                name="scheduling_jobexecution_stop",
            ),
            path(
                "running/",
                self.admin_site.admin_view(self.running_view),
                name="scheduling_running",
            ),
            *super().get_urls(),
        ]

    def running_view(self, request: HttpRequest):
        """Running now: every run in progress, its elapsed time, worker and progress, with
        cancel / terminate buttons (``scheduling.cancel_run``). ``?rows=1`` answers the
        table only: the page's script fetches it every 2 s."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        runs = [
            {
                "run": run,
                "status": display.badge(run.status, run.get_status_display()),
                "started": display.moment_html(run.started_at, self._zone(run)),
                "elapsed": display.elapsed_html(run.started_at, now),
            }
            for run in selectors.execution_in_progress_list()
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": _("Running now"),
            "opts": self.model._meta,
            "runs": runs,
            "now": display.exact(now),
            "may_cancel_runs": self.has_cancel_permission(request),
        }
        template = "scheduling/running_rows.html" if request.GET.get("rows") else None
        return TemplateResponse(request, template or "scheduling/running.html", context)

    def progress_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        """JSON: the run's status and progress, for the live view of a run in progress."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": str(_("Permission denied."))}, status=403)
        execution = JobExecution.objects.filter(pk=pk).first()
        if execution is None:
            return JsonResponse({"error": str(_("No such run."))}, status=404)
        return JsonResponse(
            {
                "status": execution.status,
                "status_display": execution.get_status_display(),
                "in_progress": execution.in_progress,
                "progress": execution.progress,
                "message": execution.progress_message,
                "text": execution.progress_text,
            }
        )

    def stop_view(self, request: HttpRequest, pk: int):
        """POST: cancel (``terminate=0``) or terminate (``terminate=1``) one run, then go
        back to the page the button was on."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}):
            back = reverse("admin:scheduling_jobexecution_change", args=[pk])
        execution = JobExecution.objects.filter(pk=pk).first()
        if execution is None:
            self.message_user(request, _("No such run."), messages.ERROR)
            return HttpResponseRedirect(back)
        self._stop_each(
            request,
            JobExecution.objects.filter(pk=pk),
            terminate=request.POST.get("terminate") == "1",
        )
        return HttpResponseRedirect(back)

    # --- list columns and times: formatted by scheduling.display --------------------------
    job_name_s = clipped_column("job_name", _("job name"))
    worker_s = clipped_column("worker", _("worker"))
    reason_s = clipped_column("reason", _("reason"))
    started_s = moment_column("started_at", _("started at"))
    finished_s = moment_column("finished_at", _("finished at"))

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, execution: JobExecution) -> str:
        """The outcome as a badge (a summary of fire times not sent: with their count); a
        run in progress with the progress it reported."""
        label = execution.get_status_display()
        if execution.missed_until is not None:
            label = f"{label} ×{execution.missed_count}"  # noqa: RUF001
        badge = display.badge(execution.status, label)
        if not execution.in_progress or not execution.progress_text:
            return badge
        return format_html("{} {}", badge, display.clipped(execution.progress_text))

    _zone = staticmethod(display.run_zone)

    def time_zone_of(self, obj: JobExecution) -> str | None:
        return display.run_zone(obj)

    @admin.display(description=_("started"), ordering="started_at")
    def started_ago(self, execution: JobExecution) -> str:
        """When the run started, as a live relative time ("3 s ago"), exact on hover."""
        return display.moment_html(
            execution.started_at, display.run_zone(execution), relative_to_now=True
        )

    @admin.display(description=_("scheduled at"), ordering="scheduled_at")
    def fire_time_s(self, execution: JobExecution) -> str:
        """The fire time; for a summary of fire times beat did not send, the first, their
        span on hover (their count is on the status badge)."""
        tz_name = self._zone(execution)
        if execution.scheduled_at is None or execution.missed_until is None:
            return display.moment_html(execution.scheduled_at, tz_name)
        return format_html(
            '<span title="{}">{}</span>',
            _("missed %(count)s fire times, %(first)s to %(last)s")
            % {
                "count": execution.missed_count,
                "first": display.exact(execution.scheduled_at, tz_name),
                "last": display.exact(execution.missed_until, tz_name),
            },
            display.exact(execution.scheduled_at, tz_name),
        )

    @admin.display(description=_("duration"), ordering="duration")
    def duration_s(self, execution: JobExecution) -> str:
        return display.duration(execution.duration)

    @admin.display(description=_("lateness"))
    def lateness_s(self, execution: JobExecution) -> str:
        return display.duration(execution.lateness)

    class Media:
        css = {"all": ("scheduling/console.css",)}
        js = ("scheduling/copy.js",)

    @admin.display(description=_("timeline"))
    def timeline(self, execution: JobExecution) -> str:
        """Fire time → sent → started → finished, each to the second, with the lateness
        and the duration between them; waiting and a cancel where they happened. Each step
        is a recorded time: one not recorded is left out."""
        tz_name = display.run_zone(execution)
        fire = execution.scheduled_at
        steps = [
            (
                _("fire time"),
                fire,
                _("its jitter: %(jitter)s") % {"jitter": display.duration(execution.jitter)}
                if fire and execution.jitter
                else "",
            ),
            # As recorded by its sender (runs sent before runs carried it have none).
            (_("sent"), execution.sent_at, ""),
            (_("waiting for a free slot"), execution.waiting_since, ""),
            (
                _("started"),
                execution.started_at,
                _("%(late)s late") % {"late": display.duration(execution.lateness)}
                if execution.lateness is not None
                else "",
            ),
            (
                _("cancel requested"),
                execution.cancel_requested_at,
                execution.cancelled_by,
            ),
            (
                _("finished"),
                execution.finished_at,
                _("took %(took)s") % {"took": display.duration(execution.duration)}
                if execution.duration is not None
                else "",
            ),
        ]
        items = format_html_join(
            "",
            '<li><span class="step">{}</span> {} <span class="duration">{}</span></li>',
            (
                (label, display.moment_html(moment, tz_name), note)
                for label, moment, note in steps
                if moment is not None
            ),
        )
        return format_html(
            '<ol id="run-timeline" class="timeline">{}</ol><p>{}</p>',
            items,
            display.badge(execution.status, execution.get_status_display()),
        )

    @admin.display(description=_("related"))
    def related_runs(self, execution: JobExecution) -> str:
        """Links to the job, the Celery task result and the run's other attempts."""
        links = []
        if execution.job_id:
            links.append(
                (reverse("admin:scheduling_job_change", args=[execution.job_id]), _("the job"))
            )
        if execution.task_result_id:
            links.append(
                (
                    reverse("admin:django_celery_results_taskresult_changelist")
                    + f"?task_id={execution.task_result_id}",
                    _("Celery task result"),
                )
            )
        first = execution.retry_of or execution
        attempts = [first, *first.retries.order_by("attempt")]
        if len(attempts) > 1:
            for attempt in attempts:
                if attempt.pk != execution.pk:
                    label = _("attempt %(n)d") % {"n": attempt.attempt + 1}
                    links.append(
                        (reverse("admin:scheduling_jobexecution_change", args=[attempt.pk]), label)
                    )
        return format_html_join(" · ", '<a href="{}">{}</a>', links) or display.EMPTY

    @admin.display(description=_("traceback"))
    def traceback_block(self, execution: JobExecution) -> str:
        if not execution.traceback:
            return display.EMPTY
        return format_html(
            '<button type="button" class="button" data-copy="run-traceback">{}</button>'
            '<pre id="run-traceback">{}</pre>',
            _("Copy"),
            execution.traceback,
        )

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


class CalendarRuleInline(admin.StackedInline):
    """A calendar's exclusions, edited on its page: stacked, a few fields a line, so the
    page fits a 1366-pixel screen (a table of all nine was 1,839 pixels wide)."""

    model = CalendarRule
    extra = 1
    fields = (
        ("kind", "label"),
        ("start_date", "end_date"),
        ("weekdays", "start_time", "end_time"),
        ("month", "day"),
    )


@admin.register(Calendar)
class CalendarAdmin(admin.ModelAdmin):
    """Exclusion calendars shared by jobs; a change reschedules the jobs that use it."""

    list_display = ("name", "description", "rule_count", "job_names")
    search_fields = ("name", "description")
    inlines = (CalendarRuleInline,)

    @admin.display(description=_("exclusions"))
    def rule_count(self, calendar: Calendar) -> int:
        return calendar.rules.count()

    @admin.display(description=_("jobs"))
    def job_names(self, calendar: Calendar) -> str:
        return ", ".join(calendar.jobs.values_list("name", flat=True)[:10]) or "-"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        with audit_context(source="admin", actor=request.user.get_username()):
            calendar_services.calendar_changed(calendar=form.instance)

    def delete_model(self, request, obj):
        calendar_services.calendar_remove(calendar=obj)

    def delete_queryset(self, request, queryset):
        for calendar in queryset:
            calendar_services.calendar_remove(calendar=calendar)


@admin.register(JobGroup)
class JobGroupAdmin(admin.ModelAdmin):
    """Job groups on record: who paused one, when and why; its cap on runs at once and
    its jobs' default queue and alert recipients (saved by
    :func:`scheduling.group_services.group_save`); actions pause and resume a whole group
    (permission ``scheduling.pause_job``)."""

    list_display = (
        "name",
        "job_count",
        "max_instances",
        "queue",
        "paused_at",
        "paused_by",
        "pause_reason",
    )
    fields = (
        "name",
        "max_instances",
        "queue",
        "alert_emails",
        "alert_webhooks",
        "paused_at",
        "paused_by",
        "pause_reason",
    )
    search_fields = ("name",)
    actions = ("pause_groups", "resume_groups")

    def get_readonly_fields(self, request, obj=None):
        # A group is its jobs' ``group`` value: renaming the row would leave them.
        locked = ("name",) if obj is not None else ()
        return (*locked, "paused_at", "paused_by", "pause_reason")

    def save_model(self, request, obj, form, change):
        group_services.group_save(group=obj)

    @admin.display(description=_("jobs"))
    def job_count(self, group: JobGroup) -> int:
        return Job.objects.filter(group=group.name).count()

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.pause_job")

    def _each(self, request, queryset, service, done_words) -> None:
        with audit_context(source="admin", actor=request.user.get_username()):
            for group in queryset:
                try:
                    jobs = service(name=group.name)
                except ValidationError as exc:
                    self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                else:
                    self.message_user(request, done_words % {"name": group.name, "n": len(jobs)})

    @admin.action(description=_("Pause selected groups (every job)"), permissions=["pause"])
    def pause_groups(self, request, queryset: QuerySet[JobGroup]):
        self._each(
            request, queryset, group_services.group_pause, _("Group %(name)s: %(n)d job(s) paused.")
        )

    @admin.action(description=_("Resume selected groups"), permissions=["pause"])
    def resume_groups(self, request, queryset: QuerySet[JobGroup]):
        self._each(
            request,
            queryset,
            group_services.group_resume,
            _("Group %(name)s: %(n)d job(s) resumed."),
        )


@admin.register(JobChange)
class JobChangeAdmin(JobZoneTimesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail, read-only and never deleted from the admin."""

    def time_zone_of(self, obj: JobChange) -> str | None:
        return obj.job.timezone if obj.job else None  # a removed job's: the operator's

    list_display = ("at_zoned", "job_name", "action", "source", "actor", "summary")
    list_select_related = ("job",)
    list_filter = ("action", "source", "job")
    search_fields = ("job_name", "actor")
    readonly_fields = ("job", "job_name", "action", "source", "actor", "at", "changes")

    @admin.display(description=_("changes"))
    def summary(self, change: JobChange) -> str:
        return _describe_changes(change)[:300]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(JobZoneTimesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Alerts and recovery notices, with how each delivery went."""

    def time_zone_of(self, obj: Alert) -> str | None:
        return obj.job.timezone if obj.job else None  # a removed job's: the operator's

    list_display = ("created_at_zoned", "job_name", "kind", "state", "message", "delivered")
    list_select_related = ("job",)
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


@admin.register(Backfill)
class BackfillAdmin(JobZoneTimesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Backfills, read-only: their state and counts, each fire time with what became of
    it (linked to its run); the action cancels the ones still sending."""

    def time_zone_of(self, obj: Backfill) -> str | None:
        return obj.timezone  # the job's when the backfill was made

    list_display = (
        "pk",
        "job_name",
        "start",
        "end",
        "state",
        "total_count",
        "skipped_count",
        "sent_count",
        "cancelled_count",
        "created_at",
    )
    list_filter = ("state", "job")
    search_fields = ("job_name",)
    actions = ("cancel_backfills",)
    readonly_fields = (
        "job",
        "job_name",
        "start",
        "end",
        "timezone",
        "reprocess",
        "overlap",
        "state",
        "created_by",
        "created_at",
        "finished_at",
        "cancelled_by",
        "total_count",
        "skipped_count",
        "sent_count",
        "cancelled_count",
        "fire_times",
    )
    exclude = ("next_send_at",)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scheduling.run_job")

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description=_("Cancel selected backfills"), permissions=["run"])
    def cancel_backfills(self, request, queryset: QuerySet[Backfill]):
        done = 0
        with audit_context(source="admin", actor=request.user.get_username()):
            for backfill in queryset:
                try:
                    services.backfill_cancel(backfill=backfill, by=request.user)
                except ValidationError as exc:
                    self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                else:
                    done += 1
        if done:
            self.message_user(
                request,
                ngettext("%(n)d backfill cancelled.", "%(n)d backfills cancelled.", done)
                % {"n": done},
            )

    @admin.display(description=_("Fire times"))
    def fire_times(self, backfill: Backfill) -> str:
        """Each fire time: what was on record, what the backfill did, and its run's outcome."""
        items = list(backfill.runs.all()[:500])
        runs = {
            run.task_result_id: run
            for run in JobExecution.objects.filter(
                task_result_id__in=[item.task_id for item in items if item.task_id]
            ).only("pk", "status", "reason", "task_result_id")
        }
        tz = schedules.get_timezone(backfill.timezone)
        rows = []
        for item in items:
            run = runs.get(item.task_id)
            outcome = (
                format_html(
                    '<a href="{}">{}</a> {}',
                    reverse("admin:scheduling_jobexecution_change", args=[run.pk]),
                    run.get_status_display(),
                    run.reason,
                )
                if run is not None
                else (_("not started yet") if item.state == BackfillRunState.SENT else "")
            )
            rows.append(
                (
                    item.scheduled_at.astimezone(tz).isoformat(),
                    item.existing or "-",
                    item.get_state_display(),
                    item.reason,
                    outcome,
                )
            )
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>",
            _("fire time"),
            _("on record"),
            _("state"),
            _("reason"),
            _("run"),
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                rows,
            ),
        )


@admin.register(BeatHeartbeat)
class BeatHeartbeatAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every beat process seen, leader or standby, and when it last ran its loop."""

    list_display = ("name", "started_at", "last_tick_at")
    readonly_fields = list_display
    ordering = ("-last_tick_at",)


class ApiKeyForm(forms.ModelForm):
    """An API key's name, privileges (check boxes), job glob and expiry."""

    privileges = forms.MultipleChoiceField(
        label=_("privileges"),
        choices=ApiPrivilege.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("What the key may do: read, run, pause, edit."),
    )

    class Meta:
        model = ApiKey
        fields = ("name", "privileges", "jobs", "expires_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """REST API keys: a new key is shown once, on the page after it is created; the list
    shows each key's state and when it was last used; revoke refuses a key from then on."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "privileges_shown",
        "jobs",
        "state_shown",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at", "created_by", "last_used_at", "revoked_at")
    actions = ["revoke_keys"]

    @admin.display(description=_("privileges"))
    def privileges_shown(self, key: ApiKey) -> str:
        return ", ".join(key.privileges)

    @admin.display(description=_("state"))
    def state_shown(self, key: ApiKey) -> str:
        return {"active": _("active"), "expired": _("expired"), "revoked": _("revoked")}[key.state]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            return
        with audit_context(source="admin", actor=request.user.get_username()):
            key, raw = services.api_key_create(
                name=obj.name,
                privileges=obj.privileges,
                jobs=obj.jobs,
                expires_at=obj.expires_at,
                by=request.user.get_username(),
            )
        obj.pk, obj.prefix, obj.created_at = key.pk, key.prefix, key.created_at
        obj._state.adding = False
        obj.raw_key = raw

    def response_add(self, request, obj, post_url_continue=None):
        """The new key, shown this once (not in a message: those may travel in a cookie)."""
        return TemplateResponse(
            request,
            "scheduling/api_key_created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "key": obj,
                "raw": obj.raw_key,
            },
        )

    @admin.action(description=_("Revoke selected API keys"), permissions=["change"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key)
        self.message_user(
            request,
            ngettext("Revoked %(count)d API key.", "Revoked %(count)d API keys.", queryset.count())
            % {"count": queryset.count()},
            messages.SUCCESS,
        )
