"""Jobs (what to run and when) and their executions (every run, with its timings)."""

import datetime as dt
import fnmatch
import hashlib
import random

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone as dj_timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from django_celery_results.models import TaskResult

from scheduling import calendars as exclusions
from scheduling import conf, registry, schedules, webhooks


def default_timezone() -> str:
    return conf.get("DEFAULT_TIMEZONE")


def default_max_instances() -> int:
    return conf.get("DEFAULT_MAX_INSTANCES")


def default_misfire_grace_time() -> int:
    return conf.get("DEFAULT_MISFIRE_GRACE_TIME")


def default_coalesce() -> bool:
    return conf.get("DEFAULT_COALESCE")


def _contains_nul(value) -> bool:
    """PostgreSQL cannot store NUL characters in text or JSON."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(v) for v in value)
    return False


_MICROSECOND = dt.timedelta(microseconds=1)

#: The highest job priority (and RabbitMQ's x-max-priority of the queues).
MAX_PRIORITY = 9

broker_name_validator = RegexValidator(
    r"^[A-Za-z0-9_.:@-]*$",
    _("Use letters, digits and . _ : @ - only (a queue, exchange or routing key name)."),
)


class TriggerType(models.TextChoices):
    """How a job's fire times are computed."""

    CRON = "cron", _("Cron")
    INTERVAL = "interval", _("Interval")
    DATE = "date", _("Once at a date")


class IntervalPeriod(models.TextChoices):
    """The unit of an interval trigger."""

    SECONDS = "seconds", _("seconds")
    MINUTES = "minutes", _("minutes")
    HOURS = "hours", _("hours")
    DAYS = "days", _("days")
    WEEKS = "weeks", _("weeks")


class ExecutionStatus(models.TextChoices):
    """A run's state: running, or how it ended (or why it never ran)."""

    RUNNING = "running", _("Running")
    SUCCESS = "success", _("Success")
    FAILURE = "failure", _("Failure")
    TIMEOUT = "timeout", _("Timed out")
    SKIPPED = "skipped", _("Skipped")
    MISSED = "missed", _("Missed")
    LOST = "lost", _("Lost")
    CANCELLING = "cancelling", _("Cancelling")
    CANCELLED = "cancelled", _("Cancelled")
    TERMINATED = "terminated", _("Terminated")
    WAITING = "waiting", _("Waiting")
    QUEUED = "queued", _("Queued after waiting")


#: Outcomes of runs whose function was called: their durations count.
EXECUTED_STATUSES = frozenset(
    {
        ExecutionStatus.SUCCESS,
        ExecutionStatus.FAILURE,
        ExecutionStatus.TIMEOUT,
        ExecutionStatus.LOST,
    }
)
#: Outcomes that count as a failure of the job (alerts, success rate).
FAILED_STATUSES = EXECUTED_STATUSES - {ExecutionStatus.SUCCESS}
#: Outcomes of fire times that did not run.
NOT_RUN_STATUSES = frozenset({ExecutionStatus.MISSED, ExecutionStatus.SKIPPED})
#: Outcomes of runs an operator (or an overlap policy) stopped: their own outcome, neither
#: a success nor a failure (no failure alert, no pause on failure), their durations cut
#: short and not counted.
STOPPED_STATUSES = frozenset({ExecutionStatus.CANCELLED, ExecutionStatus.TERMINATED})
#: A run whose function is still going: running, or asked to stop and not stopped yet. Only
#: a *running* run holds a max-instances slot (:mod:`scheduling.runs.rules`): a cancelled
#: run frees its slot at once.
IN_PROGRESS_STATUSES = frozenset({ExecutionStatus.RUNNING, ExecutionStatus.CANCELLING})


def progress_text(percent: float | None, message: str) -> str:
    """A run's progress in one line, as the admin and Flower show it: ``42% loading rows``."""
    shown = "" if percent is None else f"{percent:.0f}%"
    return " ".join(part for part in (shown, message) if part)


#: States of a run that has not ended: in progress, or waiting for a slot (overlap policy
#: buffer) and then sent to the workers.
UNFINISHED_STATUSES = IN_PROGRESS_STATUSES | {ExecutionStatus.WAITING, ExecutionStatus.QUEUED}


class OverlapPolicy(models.TextChoices):
    """What a fire time does when earlier runs of its job hold every slot (max instances)."""

    SKIP = "skip", _("Skip")
    BUFFER_ONE = "buffer_one", _("Buffer one")
    BUFFER_ALL = "buffer_all", _("Buffer all")
    CANCEL_OTHER = "cancel_other", _("Cancel the running one")
    TERMINATE_OTHER = "terminate_other", _("Terminate the running one")
    ALLOW_ALL = "allow_all", _("Allow all")


def overlap_problem(policy: str) -> str | None:
    """Why ``policy`` cannot be a job's overlap policy (or a run's override); ``None``
    when it can."""
    if policy not in OverlapPolicy.values:
        return _("%(policy)s is not an overlap policy; choose one of %(choices)s.") % {
            "policy": repr(policy),
            "choices": ", ".join(OverlapPolicy.values),
        }
    return None


def kwargs_problem(kwargs) -> str | None:
    """Why ``kwargs`` cannot be the keyword arguments of a job or of one run (run now with
    overrides); ``None`` when it can."""
    if not isinstance(kwargs, dict):
        return _('Keyword arguments must be a JSON object, e.g. {"days": 7}.')
    if _contains_nul(kwargs):
        return _("Text must not contain NUL characters (\\u0000).")
    return None


class ExecutionTrigger(models.TextChoices):
    """What sent a run: its schedule (beat), an operator (run now), a re-run of a past run,
    a backfill of a time range, or a chain (another job's finished run started it)."""

    SCHEDULE = "schedule", _("Schedule")
    MANUAL = "manual", _("Manual")
    RERUN = "rerun", _("Re-run")
    BACKFILL = "backfill", _("Backfill")
    CHAIN = "chain", _("Chain")


class ChainCondition(models.TextChoices):
    """Which outcome of a job's run starts the next job of a chain: a success, a failure
    (failed, timed out or lost, after its last retry), or either."""

    SUCCESS = "success", _("on success")
    FAILURE = "failure", _("on failure")
    ALWAYS = "always", _("always")


kwarg_name_validator = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    _(
        "Use a Python name (letters, digits, _; not starting with a digit) for the keyword argument."
    ),
)


def recipient_lines(text: str) -> list[str]:
    """The addresses or URLs of an alert recipients field: one per line or comma-separated."""
    return [line.strip() for line in (text or "").replace(",", "\n").splitlines() if line.strip()]


class JobGroup(models.Model):
    """A group of jobs (the jobs whose ``group`` is its name): paused and resumed as a
    whole (the row keeps who paused it, when and why), a cap on its runs at once across
    every worker, and the queue and alert recipients of its jobs that have none of their
    own (:func:`scheduling.selectors.job_routed_queue`,
    :func:`scheduling.selectors.job_alert_recipients`)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    max_instances = models.PositiveSmallIntegerField(
        _("max instances"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_(
            "Most runs of the group's jobs at the same time, across all workers (empty: no "
            "cap). A run that finds the group full follows its job's overlap policy, as one "
            "that finds its job's max instances reached."
        ),
    )
    queue = models.CharField(
        _("queue"),
        max_length=200,
        blank=True,
        validators=[broker_name_validator],
        help_text=_(
            "Celery queue of the group's jobs that have no queue of their own (empty: the "
            "default queue)."
        ),
    )
    alert_emails = models.TextField(
        _("alert e-mails"),
        blank=True,
        help_text=_(
            "Addresses told of the alerts of the group's jobs that have no alert recipients "
            "of their own; one per line."
        ),
    )
    alert_webhooks = models.TextField(
        _("alert webhooks"),
        blank=True,
        help_text=_(
            "URLs that receive the alerts of the group's jobs that have no alert recipients "
            "of their own, as a JSON POST; one per line."
        ),
    )
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True, editable=False)
    paused_by = models.CharField(_("paused by"), max_length=150, blank=True, editable=False)
    pause_reason = models.CharField(_("pause reason"), max_length=300, blank=True, editable=False)

    class Meta:
        verbose_name = _("job group")
        verbose_name_plural = _("job groups")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def alert_recipients(self) -> tuple[list[str], list[str]]:
        """The group's alert e-mail addresses and webhook URLs."""
        return recipient_lines(self.alert_emails), recipient_lines(self.alert_webhooks)

    def clean(self) -> None:
        if self.alert_webhooks:
            webhooks.webhook_urls_validate(text=self.alert_webhooks)

    def job_pause_reason(self) -> str:
        """The pause reason its jobs carry while the group pause holds them: how a resume
        of the group knows which jobs it paused (those paused before keep their own)."""
        words = f"Group {self.name} paused by {self.paused_by or 'an operator'}"
        return f"{words}: {self.pause_reason}" if self.pause_reason else words


class CalendarRuleKind(models.TextChoices):
    """What one exclusion of a calendar covers (see :mod:`scheduling.calendars`)."""

    DATE = "date", _("date")
    RANGE = "range", _("date range")
    WEEKLY = "weekly", _("weekly")
    YEARLY = "yearly", _("every year")


calendar_name_validator = RegexValidator(
    r"^[A-Za-z0-9_.-]+$", _("Use letters, digits and . _ - only in a calendar name.")
)


class Calendar(models.Model):
    """A named exclusion calendar (Quartz's): fire times its rules cover do not run, for
    every job that names it. Its dates are read in each job's own timezone."""

    name = models.CharField(
        _("name"), max_length=100, unique=True, validators=[calendar_name_validator]
    )
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("exclusion calendar")
        verbose_name_plural = _("exclusion calendars")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.name == exclusions.SKIP_NEXT:
            raise ValidationError(
                {"name": _("'%(name)s' is reserved for skip next run.") % {"name": self.name}}
            )


class CalendarRule(models.Model):
    """One exclusion of a calendar: a date, a date range, weekly days (optionally a time
    window on them) or a yearly date; on the wall clock of the job's timezone."""

    calendar = models.ForeignKey(
        Calendar, verbose_name=_("calendar"), on_delete=models.CASCADE, related_name="rules"
    )
    kind = models.CharField(_("kind"), max_length=10, choices=CalendarRuleKind.choices)
    start_date = models.DateField(
        _("date"), null=True, blank=True, help_text=_("The date, or a range's first day.")
    )
    end_date = models.DateField(
        _("last date"), null=True, blank=True, help_text=_("A range's last day (included).")
    )
    weekdays = models.CharField(
        _("weekdays"), max_length=40, blank=True, help_text=_("Weekly: e.g. SAT,SUN or MON-FRI.")
    )
    start_time = models.TimeField(
        _("from"), null=True, blank=True, help_text=_("Weekly: from this time (empty: 00:00).")
    )
    end_time = models.TimeField(
        _("until"), null=True, blank=True, help_text=_("Weekly: until this time (empty: 24:00).")
    )
    month = models.PositiveSmallIntegerField(
        _("month"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(12)]
    )
    day = models.PositiveSmallIntegerField(
        _("day"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(31)]
    )
    label = models.CharField(_("label"), max_length=200, blank=True)

    #: What defines an exclusion: the admin's columns and a config file's keys.
    FIELDS = (
        "kind",
        "start_date",
        "end_date",
        "weekdays",
        "start_time",
        "end_time",
        "month",
        "day",
        "label",
    )

    class Meta:
        verbose_name = _("exclusion")
        verbose_name_plural = _("exclusions")
        ordering = ["kind", "start_date", "month", "day", "pk"]

    def __str__(self) -> str:
        try:
            return self.as_rule().describe()
        except (ValueError, TypeError):
            return self.kind

    def as_rule(self) -> exclusions.Rule:
        """The rule :mod:`scheduling.calendars` evaluates."""
        return exclusions.Rule(
            calendar=self.calendar.name,
            kind=self.kind,
            start=self.start_date,
            end=self.end_date,
            weekdays=exclusions.parse_weekdays(self.weekdays) if self.weekdays else (),
            start_time=self.start_time,
            end_time=self.end_time,
            month=self.month,
            day=self.day,
            label=self.label,
        )

    def clean(self) -> None:
        need = {
            CalendarRuleKind.DATE: ["start_date"],
            CalendarRuleKind.RANGE: ["start_date", "end_date"],
            CalendarRuleKind.WEEKLY: ["weekdays"],
            CalendarRuleKind.YEARLY: ["month", "day"],
        }.get(self.kind, [])
        errors = {
            name: _("Required for this kind of exclusion.")
            for name in need
            if getattr(self, name) in (None, "")
        }
        if self.kind == CalendarRuleKind.WEEKLY and self.weekdays:
            try:
                self.weekdays = exclusions.weekday_names(exclusions.parse_weekdays(self.weekdays))
            except ValueError as exc:
                errors["weekdays"] = str(exc)
        if (
            self.kind == CalendarRuleKind.RANGE
            and self.start_date
            and self.end_date
            and self.end_date < self.start_date
        ):
            errors["end_date"] = _("The last date is before the first.")
        if (
            self.start_time is not None
            and self.end_time is not None
            and self.end_time <= self.start_time
        ):
            errors["end_time"] = _(
                "The window ends before it starts; a window across midnight is two rules."
            )
        if self.kind == CalendarRuleKind.YEARLY and self.month and self.day:
            try:
                dt.date(2024, self.month, self.day)  # a leap year: 02-29 is allowed
            except ValueError:
                errors["day"] = _("There is no such day in that month.")
        if errors:
            raise ValidationError(errors)


class Job(models.Model):
    """A registered task function, its arguments and one trigger (cron, interval or date)."""

    #: The fields that define a job's fire times; a change to one restarts an interval
    #: from the moment of the change.
    TRIGGER_FIELDS = (
        "trigger_type",
        "cron_expression",
        "interval_every",
        "interval_period",
        "run_at",
    )
    #: When the job may fire at all: no fire time before ``start_at``, none after
    #: ``end_at``, at most ``max_runs`` sent by the schedule.
    WINDOW_FIELDS = ("start_at", "end_at", "max_runs")
    #: Fields whose change moves the next fire time.
    SCHEDULE_FIELDS = (*TRIGGER_FIELDS, "timezone", "enabled", *WINDOW_FIELDS)
    #: Where a job's runs are sent (Celery's routing options of the message).
    ROUTING_FIELDS = ("queue", "priority", "exchange", "routing_key")
    #: How a job runs, beyond what and when: the "options" of a config file, and editable
    #: everywhere a job is.
    OPTION_FIELDS = (
        "group",
        "coalesce",
        "max_instances",
        "overlap",
        "misfire_grace_time",
        "jitter",
        "soft_time_limit",
        "time_limit",
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "retry_on",
        "slow_threshold",
        "alert_emails",
        "alert_webhooks",
        "alert_grace",
        "pause_after_failures",
        *ROUTING_FIELDS,
    )
    #: Why and until when a job is paused: set by a pause, cleared by a resume.
    PAUSE_FIELDS = ("pause_reason", "paused_by", "paused_at", "resume_at")
    #: Every field an operator edits (admin form, commands, import, services).
    EDITABLE_FIELDS = (
        "name",
        "title",
        "description",
        "task",
        "args",
        "kwargs",
        *SCHEDULE_FIELDS,
        *OPTION_FIELDS,
    )

    name = models.CharField(
        _("name"), max_length=200, unique=True, help_text=_("Unique name of the job.")
    )
    title = models.CharField(
        _("title"),
        max_length=200,
        blank=True,
        help_text=_("Display name, e.g. 'Daily cleanup'."),
    )
    description = models.TextField(
        _("description"), blank=True, help_text=_("What the job is for.")
    )
    group = models.CharField(
        _("group"),
        max_length=100,
        default="default",
        db_index=True,
        help_text=_("Free-form group used to filter jobs."),
    )
    task = models.CharField(
        _("task"),
        max_length=200,
        help_text=_("Registered task function the job runs."),
    )
    args = models.JSONField(
        _("positional arguments"),
        default=list,
        blank=True,
        help_text=_('JSON list, e.g. ["a", 1].'),
    )
    kwargs = models.JSONField(
        _("keyword arguments"),
        default=dict,
        blank=True,
        help_text=_('JSON object, e.g. {"days": 7}.'),
    )
    enabled = models.BooleanField(
        _("enabled"),
        default=True,
        help_text=_("A paused job keeps its definition but never fires."),
    )
    trigger_type = models.CharField(
        _("trigger"), max_length=10, choices=TriggerType.choices, default=TriggerType.CRON
    )
    cron_expression = models.CharField(
        _("cron expression"),
        max_length=200,
        blank=True,
        help_text=_(
            "6 fields, seconds first (second minute hour day month weekday), "
            "e.g. '0 */5 * * * *'; 5-field cron runs at second 0; an optional 7th field is "
            "the year. Monday is 1. Also @daily, @hourly..., L, L-3, LW, 15W, 5L (last "
            "Friday), 1#2 (second Monday)."
        ),
    )
    interval_every = models.PositiveIntegerField(
        _("every"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Number of periods between runs."),
    )
    interval_period = models.CharField(
        _("period"),
        max_length=10,
        choices=IntervalPeriod.choices,
        default=IntervalPeriod.MINUTES,
        blank=True,
    )
    run_at = models.DateTimeField(
        _("run at"), null=True, blank=True, help_text=_("When a one-off job runs.")
    )
    timezone = models.CharField(
        _("timezone"),
        max_length=64,
        default=default_timezone,
        help_text=_("IANA timezone the cron expression is read in, e.g. Asia/Shanghai."),
    )
    coalesce = models.BooleanField(
        _("coalesce"),
        default=default_coalesce,
        help_text=_("Run missed fire times once instead of once each."),
    )
    max_instances = models.PositiveSmallIntegerField(
        _("max instances"),
        default=default_max_instances,
        validators=[MinValueValidator(1)],
        help_text=_(
            "Most runs of this job at the same time (the overlap policy allow all ignores it)."
        ),
    )
    overlap = models.CharField(
        _("overlap policy"),
        max_length=20,
        choices=OverlapPolicy.choices,
        default=OverlapPolicy.SKIP,
        help_text=_(
            "When a fire time comes while max instances runs are still going: skip it; "
            "buffer one (keep one run waiting, skip later ones); buffer all (keep them "
            "waiting, up to a bound); or allow all (start it anyway, no limit). A waiting "
            "run holds no worker process, and its wait does not count against its misfire "
            "grace."
        ),
    )
    misfire_grace_time = models.PositiveIntegerField(
        _("misfire grace time (s)"),
        default=default_misfire_grace_time,
        validators=[MinValueValidator(1)],
        help_text=_("How late a run may start after its fire time and still run."),
    )
    jitter = models.PositiveIntegerField(
        _("jitter (s)"),
        default=0,
        help_text=_("Delay each fire time by a random 0..N seconds, to spread load."),
    )
    soft_time_limit = models.PositiveIntegerField(
        _("soft time limit (s)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("A run still going after this long is interrupted and recorded as timed out."),
    )
    time_limit = models.PositiveIntegerField(
        _("hard time limit (s)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_(
            "A run still going after this long is killed (its worker process is replaced)."
        ),
    )
    max_retries = models.PositiveSmallIntegerField(
        _("retries"), default=0, help_text=_("How many times a failed run is tried again.")
    )
    retry_backoff = models.PositiveIntegerField(
        _("retry backoff (s)"),
        default=2,
        help_text=_("First retry delay; it doubles with every attempt."),
    )
    retry_backoff_max = models.PositiveIntegerField(_("longest retry delay (s)"), default=300)
    retry_jitter = models.BooleanField(
        _("retry jitter"),
        default=True,
        help_text=_("Pick each retry delay at random between 0 and the backoff."),
    )
    retry_on = models.JSONField(
        _("retry on"),
        default=list,
        blank=True,
        help_text=_(
            'Exception class names that are retried, e.g. ["ConnectionError"]; empty: any error.'
        ),
    )
    slow_threshold = models.FloatField(
        _("slow threshold (s)"),
        null=True,
        blank=True,
        help_text=_("A run slower than this is slow (empty: the global setting)."),
    )
    alert_emails = models.TextField(
        _("alert e-mails"),
        blank=True,
        help_text=_(
            "Addresses told when the job fails, misses, is slow or stops running; one per line."
        ),
    )
    alert_webhooks = models.TextField(
        _("alert webhooks"),
        blank=True,
        help_text=_("URLs that receive each alert as a JSON POST; one per line."),
    )
    alert_grace = models.PositiveIntegerField(
        _("alert grace (s)"),
        default=300,
        help_text=_(
            "Dead man's switch: alert when no run succeeded within the job's period plus this."
        ),
    )
    queue = models.CharField(
        _("queue"),
        max_length=200,
        blank=True,
        validators=[broker_name_validator],
        help_text=_(
            "Celery queue the runs are sent to (empty: the default queue). Only a worker "
            "consuming it runs them: celery -A project worker -Q reports."
        ),
    )
    priority = models.PositiveSmallIntegerField(
        _("priority"),
        default=0,
        validators=[MaxValueValidator(MAX_PRIORITY)],
        help_text=_(
            "0 (lowest) to 9 (most urgent): on Redis and RabbitMQ a waiting run of a higher "
            "priority is taken before those of lower ones in the same queue. The embedded "
            "broker ignores it."
        ),
    )
    exchange = models.CharField(
        _("exchange"),
        max_length=200,
        blank=True,
        validators=[broker_name_validator],
        help_text=_(
            "RabbitMQ: the exchange the runs are published to, declared on the broker and "
            "bound to a queue a worker consumes (empty: the queue's own)."
        ),
    )
    routing_key = models.CharField(
        _("routing key"),
        max_length=200,
        blank=True,
        validators=[broker_name_validator],
        help_text=_("RabbitMQ: the routing key the runs are published with (empty: the queue's)."),
    )
    start_at = models.DateTimeField(
        _("start at"),
        null=True,
        blank=True,
        help_text=_(
            "No run before this moment: the first run is the first fire time at or after it "
            "(an interval counts from it). Empty: from now."
        ),
    )
    end_at = models.DateTimeField(
        _("end at"),
        null=True,
        blank=True,
        help_text=_(
            "No run after this moment. Once no fire time is left before it, the job is "
            "finished: disabled, with the reason in its audit trail. Empty: no end."
        ),
    )
    max_runs = models.PositiveIntegerField(
        _("max runs"),
        null=True,
        blank=True,
        validators=[
            MinValueValidator(1, _("Max runs is at least 1; leave it empty for no limit."))
        ],
        help_text=_(
            "Most fire times the schedule sends over the job's life; after the last one the "
            "job is finished (disabled). Manual runs and retries are not counted, nor fire "
            "times missed before they were sent. Empty: no limit."
        ),
    )
    scheduled_run_count = models.PositiveIntegerField(
        _("scheduled runs sent"),
        default=0,
        editable=False,
        help_text=_(
            "Fire times the schedule has sent to the workers, counted against max runs "
            "(whatever their fate there); manual runs and retries are not counted."
        ),
    )
    schedule_anchor = models.DateTimeField(
        _("schedule anchor"),
        default=dj_timezone.now,
        help_text=_("Start of an interval schedule; set whenever the trigger changes."),
    )
    next_run_at = models.DateTimeField(
        _("next run"), null=True, blank=True, db_index=True, editable=False
    )
    dispatch_at = models.DateTimeField(
        _("dispatch at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When beat sends the next run: its fire time plus the jitter drawn for it."),
    )
    version = models.PositiveIntegerField(
        _("version"),
        default=1,
        editable=False,
        help_text=_("Bumped on every change, so beat never overwrites a newer definition."),
    )
    coalesced_until = models.DateTimeField(
        _("coalesced until"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("With coalesce on: fire times up to this one are covered by a run."),
    )
    missed_from = models.DateTimeField(
        _("missed from"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "Fire times from this one up to (not including) missed before were not sent "
            "(beat was down); beat records them as one summary soon after it catches up."
        ),
    )
    missed_before = models.DateTimeField(
        _("missed before"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("End of the fire times not sent, not yet recorded (see missed from)."),
    )
    last_run_at = models.DateTimeField(_("last run"), null=True, blank=True, editable=False)
    last_status = models.CharField(
        _("last outcome"),
        max_length=10,
        choices=ExecutionStatus.choices,
        blank=True,
        editable=False,
    )
    last_duration = models.FloatField(_("last duration (s)"), null=True, blank=True, editable=False)
    total_run_count = models.PositiveIntegerField(_("runs"), default=0, editable=False)
    pause_reason = models.CharField(
        _("pause reason"),
        max_length=500,
        blank=True,
        editable=False,
        help_text=_("Why the job is paused: as the operator wrote it, or why it paused itself."),
    )
    paused_by = models.CharField(_("paused by"), max_length=150, blank=True, editable=False)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True, editable=False)
    resume_at = models.DateTimeField(
        _("resumes at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("A paused job resumes by itself then, from its next fire time after it."),
    )
    pause_after_failures = models.PositiveIntegerField(
        _("pause after failures"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_(
            "Pause the job by itself after this many failed runs in a row, counted after "
            "all retries (cancelled runs do not count). Empty: never."
        ),
    )
    consecutive_failures = models.PositiveIntegerField(
        _("failures in a row"), default=0, editable=False
    )
    calendars = models.ManyToManyField(
        Calendar,
        verbose_name=_("exclusion calendars"),
        blank=True,
        related_name="jobs",
        help_text=_(
            "Fire times these calendars exclude do not run (recorded as skipped); their "
            "dates are read in the job's timezone."
        ),
    )
    has_calendars = models.BooleanField(
        _("has calendars"),
        default=False,
        editable=False,
        help_text=_("Whether the job names any calendar: beat reads calendars only then."),
    )
    has_links = models.BooleanField(
        _("starts other jobs"),
        default=False,
        editable=False,
        help_text=_(
            "Whether its finished runs start other jobs (chain): workers read its links only then."
        ),
    )
    skip_at = models.DateTimeField(
        _("skip the run at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("A one-off exclusion (skip next run): removed once it has passed."),
    )
    excluded_from = models.DateTimeField(
        _("excluded from"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "Fire times from this one up to the next run are excluded (calendars); beat "
            "records them as skipped once they have passed."
        ),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["name"]
        indexes = [
            models.Index(fields=["enabled", "next_run_at"], name="job_due_idx"),
            # Beat asks only for due jobs: the enabled ones in dispatch order.
            models.Index(
                fields=["dispatch_at"], condition=models.Q(enabled=True), name="job_dispatch_idx"
            ),
            # Beat looks for paused jobs whose resume time has come.
            models.Index(
                fields=["resume_at"],
                condition=models.Q(enabled=False, resume_at__isnull=False),
                name="job_resume_idx",
            ),
            # Beat records the outages it caught up with: the jobs that have one pending.
            models.Index(
                fields=["missed_from"],
                condition=models.Q(missed_from__isnull=False),
                name="job_missed_pending_idx",
            ),
        ]
        permissions = [
            ("run_job", _("Can run a job now")),
            ("cancel_run", _("Can cancel and terminate a job's running runs")),
            ("pause_job", _("Can pause and resume a job")),
            ("export_secrets", _("Can export a job's secret keyword arguments in clear")),
            (
                "keep_secrets",
                _("Can keep a job's stored secrets while changing its other keyword arguments"),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def plain_trigger(self) -> schedules.Trigger:
        """The trigger of this job's fields, without its validity window; ``ValueError``
        when they are invalid."""
        if self.trigger_type == TriggerType.CRON:
            return schedules.CronTrigger(self.cron_expression, self.timezone)
        if self.trigger_type == TriggerType.INTERVAL:
            if not self.interval_every or self.interval_period not in schedules.INTERVAL_UNITS:
                raise ValueError("An interval job needs 'every' (at least 1) and a period.")
            seconds = self.interval_every * schedules.INTERVAL_UNITS[self.interval_period]
            anchor = self.schedule_anchor
            if self.start_at is not None:
                # Counted from the start time, which is the first fire time itself.
                try:
                    anchor = self.start_at - dt.timedelta(seconds=seconds)
                except OverflowError:
                    raise ValueError("The start time is too early for this interval.") from None
            return schedules.IntervalTrigger(seconds=seconds, anchor=anchor)
        if self.trigger_type == TriggerType.DATE:
            if self.run_at is None:
                raise ValueError("A one-off job needs 'run at'.")
            return schedules.DateTrigger(self.run_at)
        raise ValueError(f"Unknown trigger type {self.trigger_type!r}.")

    def trigger(self, *, excluding: bool = True) -> schedules.Trigger:
        """The job's fire times: its trigger (:meth:`plain_trigger`) less what its
        calendars and its skip next run exclude (unless ``excluding`` is false), within
        its validity window (``start_at``, ``end_at``); ``ValueError`` when the fields are
        invalid."""
        plain = self.plain_trigger()
        if excluding:
            rules = self.exclusion_rules()
            if rules or self.skip_at is not None:
                plain = exclusions.Excluding(plain, rules, self.timezone, self.skip_at)
        if self.start_at is None and self.end_at is None:
            return plain
        return schedules.Window(plain, start=self.start_at, end=self.end_at)

    def exclusion_rules(self) -> tuple[exclusions.Rule, ...]:
        """The rules of the job's calendars (none for an unsaved job, unless a form set
        ``pending_calendars``); no query for a job without calendars (``has_calendars``),
        and none when ``calendars__rules`` were prefetched."""
        chosen = getattr(self, "pending_calendars", None)
        if chosen is None:
            if self.pk is None or not self.has_calendars:
                return ()
            chosen = self.calendars.all()
        return tuple(rule.as_rule() for calendar in chosen for rule in calendar.rules.all())

    def set_next_run_after(self, moment: dt.datetime) -> None:
        """Make the first fire time after ``moment`` the next run, and remember where
        excluded fire times before it begin (``excluded_from``), for beat to record."""
        following = self.compute_next_run(moment)
        self.set_next_run(following)
        self.note_excluded(moment, following)

    def note_excluded(self, after: dt.datetime, following: dt.datetime | None) -> None:
        """Keep ``excluded_from``: the first fire time after ``after`` when exclusions
        removed it (it comes before ``following``); a span pending already is kept."""
        if self.excluded_from is not None or (self.skip_at is None and not self.exclusion_rules()):
            return
        try:
            raw = self.trigger(excluding=False).next_after(after)
        except ValueError:
            return
        if raw is not None and (following is None or raw < following):
            self.excluded_from = raw

    @property
    def runs_remaining(self) -> int | None:
        """Fire times the schedule may still send (``None``: no max runs)."""
        if self.max_runs is None:
            return None
        return max(self.max_runs - self.scheduled_run_count, 0)

    def finished_reason(self, following: dt.datetime | None) -> str | None:
        """Why a job with a validity window is finished when ``following`` is its next fire
        time (``None``: not finished; a job without a window never finishes this way)."""
        if self.runs_remaining == 0:
            return f"Finished: it has sent its {self.max_runs} runs (max runs)."
        if following is None and self.end_at is not None:
            return (
                f"Finished: no fire time is left before its end time "
                f"{self._local_iso(self.end_at)}."
            )
        if following is None and self.max_runs is not None:
            return (
                f"Finished: its trigger has no fire time left ({self.scheduled_run_count} of "
                f"{self.max_runs} runs sent)."
            )
        return None

    def _local_iso(self, moment: dt.datetime) -> str:
        """``moment`` in the job's timezone (in UTC if that zone is unknown), ISO 8601."""
        try:
            return moment.astimezone(schedules.get_timezone(self.timezone)).isoformat()
        except (ValueError, OverflowError):
            return moment.isoformat()

    @property
    def slow_after(self) -> float | None:
        """Seconds over which a run of this job is slow: its own threshold, or the app's
        ``SLOW_THRESHOLD`` (``None``: never slow)."""
        return (
            self.slow_threshold if self.slow_threshold is not None else conf.get("SLOW_THRESHOLD")
        )

    @property
    def alert_recipients(self) -> tuple[list[str], list[str]]:
        """The job's own alert e-mail addresses and webhook URLs, one per line or
        comma-separated (with its group's: :func:`scheduling.selectors.job_alert_recipients`)."""
        return recipient_lines(self.alert_emails), recipient_lines(self.alert_webhooks)

    def compute_next_run(self, after: dt.datetime | None = None) -> dt.datetime | None:
        return self.trigger().next_after(after or dj_timezone.now())

    def draw_jitter(self) -> float:
        """A random delay for one fire time (0 when the job has no jitter)."""
        return random.uniform(0, self.jitter) if self.jitter else 0.0

    def set_next_run(self, fire_time: dt.datetime | None) -> None:
        """Make ``fire_time`` the next run (``None``: no more runs), with a fresh jitter."""
        self.next_run_at = fire_time
        self.dispatch_at = (
            None if fire_time is None else fire_time + dt.timedelta(seconds=self.draw_jitter())
        )

    @property
    def next_jitter(self) -> float:
        """The jitter drawn for the next fire time."""
        if self.next_run_at is None or self.dispatch_at is None:
            return 0.0
        return (self.dispatch_at - self.next_run_at).total_seconds()

    def clean(self) -> None:
        errors: dict[str, str | list[str]] = {}
        if self.task and not registry.is_registered(self.task):
            errors["task"] = str(registry.UnknownTaskError(self.task))
        text_fields = (
            "name",
            "title",
            "description",
            "group",
            "task",
            "cron_expression",
            "timezone",
            "alert_emails",
            "alert_webhooks",
        )
        for name in ("args", "kwargs", *text_fields):
            if _contains_nul(getattr(self, name)):
                errors[name] = _("Text must not contain NUL characters (\\u0000).")
        if not isinstance(self.args, list):
            errors["args"] = _('Positional arguments must be a JSON list, e.g. [1, "a"].')
        if problem := kwargs_problem(self.kwargs):
            errors["kwargs"] = problem
        try:
            schedules.get_timezone(self.timezone)
        except ValueError as exc:
            errors["timezone"] = str(exc)
        if self.trigger_type == TriggerType.CRON:
            try:
                self.cron_expression = schedules.normalize_cron(self.cron_expression)
            except ValueError as exc:
                errors["cron_expression"] = str(exc)
            else:
                plain = self.plain_trigger() if "timezone" not in errors else None
                if plain is not None and plain.next_after(dj_timezone.now()) is None:
                    errors["cron_expression"] = _(
                        "The cron expression %(expr)s never fires (no such date)."
                    ) % {"expr": repr(self.cron_expression)}
        elif self.trigger_type == TriggerType.INTERVAL:
            if not self.interval_every:
                errors["interval_every"] = _("An interval job needs 'every' of at least 1.")
            elif self.interval_period not in schedules.INTERVAL_UNITS:
                errors["interval_period"] = _("Choose a period for the interval.")
            else:
                try:
                    self.trigger()
                except ValueError as exc:
                    errors["interval_every"] = str(exc)
        elif self.trigger_type == TriggerType.DATE and self.run_at is None:
            errors["run_at"] = _("A one-off job needs the date and time it runs at.")
        elif self.trigger_type == TriggerType.DATE:
            try:
                self.run_at.astimezone(dt.UTC)
            except OverflowError:
                errors["run_at"] = _("The date is out of range.")
        errors.update(self._window_errors(errors))
        if not isinstance(self.retry_on, list) or not all(
            isinstance(name, str) and name for name in self.retry_on
        ):
            errors["retry_on"] = _(
                'Retry on must be a JSON list of exception names, e.g. ["ConnectionError"].'
            )
        if "alert_webhooks" not in errors:
            try:
                webhooks.webhook_urls_validate(text=self.alert_webhooks)
            except ValidationError as exc:
                errors["alert_webhooks"] = exc.message_dict["alert_webhooks"]
        if problem := overlap_problem(self.overlap):
            errors["overlap"] = problem
        if self.soft_time_limit and self.time_limit and self.time_limit <= self.soft_time_limit:
            errors["time_limit"] = _("The hard time limit must be longer than the soft one.")
        if errors:
            raise ValidationError(errors)

    def _window_errors(self, errors: dict) -> dict[str, str]:
        """What is wrong with the validity window; ``errors`` found so far (a broken
        trigger leaves the window's fire times unchecked)."""
        found: dict[str, str] = {}
        for name in ("start_at", "end_at"):
            moment = getattr(self, name)
            if moment is None:
                continue
            if dj_timezone.is_naive(moment):
                found[name] = _(
                    "Give the date-time with its timezone (a naive one is read in the job's "
                    "timezone by the forms, commands and imports)."
                )
                continue
            try:
                moment.astimezone(dt.UTC)
            except OverflowError:
                found[name] = _("The date is out of range.")
        if found:
            return found
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            return {"end_at": _("The end time must be after the start time.")}
        if not self.enabled or errors:
            return {}
        if self.runs_remaining == 0:
            return {
                "max_runs": _(
                    "The job has already sent %(count)d scheduled runs: give max runs above "
                    "%(count)d or clear it to run it again, or pause it."
                )
                % {"count": self.scheduled_run_count}
            }
        if self.start_at is None and self.end_at is None:
            return {}
        now = dj_timezone.now()
        try:
            plain = self.plain_trigger()
            windowed, unbounded = self.trigger().next_after(now), plain.next_after(now)
            after_start = self.start_at and plain.next_after(self.start_at - _MICROSECOND)
        except (ValueError, OverflowError):
            return {}
        if windowed is not None or unbounded is None:
            return {}  # fires within the window, or its trigger has ended anyway
        if self.start_at is not None and after_start is None:
            return {
                "start_at": _("The trigger has no fire time at or after the start time %(start)s.")
                % {"start": self._local_iso(self.start_at)}
            }
        if self.end_at is not None:
            return {
                "end_at": _(
                    "No fire time is left before the end time %(end)s: move the end time, "
                    "clear it, or pause the job."
                )
                % {"end": self._local_iso(self.end_at)}
            }
        return {}

    def describe_trigger(self) -> str:
        """The trigger in plain words, e.g. "Every 5 minutes (Asia/Shanghai)"."""
        try:
            if self.trigger_type == TriggerType.CRON:
                locale = "zh_CN" if (get_language() or "").startswith("zh") else "en_US"
                words = schedules.describe_cron(self.cron_expression, locale=locale)
                return f"{words} ({self.timezone})"
            if self.trigger_type == TriggerType.INTERVAL:
                return _("Every %(every)s %(period)s") % {
                    "every": self.interval_every,
                    "period": IntervalPeriod(self.interval_period).label,
                }
            if self.trigger_type == TriggerType.DATE and self.run_at:
                local = self.run_at.astimezone(schedules.get_timezone(self.timezone))
                return _("Once at %(when)s (%(tz)s)") % {
                    "when": local.strftime("%Y-%m-%d %H:%M:%S"),
                    "tz": self.timezone,
                }
        except ValueError as exc:
            return _("Invalid trigger: %(error)s") % {"error": exc}
        return ""


class JobExecution(models.Model):
    """One run of a job: when it was due, when it ran, how it ended and where."""

    job = models.ForeignKey(
        Job,
        verbose_name=_("job"),
        on_delete=models.SET_NULL,
        null=True,
        related_name="executions",
    )
    job_name = models.CharField(
        _("job name"), max_length=200, help_text=_("Kept when the job is removed.")
    )
    task = models.CharField(_("task"), max_length=200)
    trigger = models.CharField(_("trigger"), max_length=10, choices=ExecutionTrigger.choices)
    status = models.CharField(
        _("outcome"), max_length=10, choices=ExecutionStatus.choices, db_index=True
    )
    scheduled_at = models.DateTimeField(_("scheduled at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), db_index=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    duration = models.FloatField(_("duration (s)"), null=True, blank=True)
    result = models.TextField(_("result"), blank=True)
    exception = models.TextField(_("exception"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True)
    reason = models.CharField(
        _("reason"),
        max_length=500,
        blank=True,
        help_text=_("Why a run was skipped, missed, lost, cancelled, terminated, or waited."),
    )
    waiting_since = models.DateTimeField(
        _("waiting since"),
        null=True,
        blank=True,
        help_text=_(
            "When the run began waiting for a free slot (overlap policy buffer); the wait "
            "does not count against its misfire grace."
        ),
    )
    jitter = models.FloatField(_("jitter (s)"), null=True, blank=True)
    excluded_by = models.CharField(
        _("excluded by"),
        max_length=100,
        blank=True,
        help_text=_("The calendar that excluded these fire times (skip-next: a skip next run)."),
    )
    missed_until = models.DateTimeField(
        _("missed until"),
        null=True,
        blank=True,
        help_text=_(
            "A summary of fire times beat did not send (it was down): the last of them; "
            "the first is the fire time."
        ),
    )
    missed_count = models.PositiveIntegerField(
        _("fire times missed"),
        null=True,
        blank=True,
        help_text=_(
            "A summary of fire times beat did not send: how many, from the fire time to "
            "missed until. Empty: this row is one fire time."
        ),
    )
    attempt = models.PositiveSmallIntegerField(_("attempt"), default=0)
    retry_of = models.ForeignKey(
        "self",
        verbose_name=_("first attempt"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="retries",
    )
    lease_until = models.DateTimeField(
        _("lease until"),
        null=True,
        blank=True,
        help_text=_(
            "A running run whose worker stops renewing this is counted as lost; a queued "
            "one not started by then is sent again."
        ),
    )
    cancel_requested_at = models.DateTimeField(
        _("cancel requested at"),
        null=True,
        blank=True,
        help_text=_("When an operator asked this run to stop (cancel or terminate)."),
    )
    cancelled_by = models.CharField(
        _("cancelled by"),
        max_length=150,
        blank=True,
        help_text=_("Who cancelled or terminated the run (a user, or what acted for one)."),
    )
    progress = models.FloatField(
        _("progress (%)"),
        null=True,
        blank=True,
        help_text=_("What the function last reported through its run context, 0 to 100."),
    )
    progress_message = models.CharField(
        _("progress message"),
        max_length=500,
        blank=True,
        help_text=_("The message the function reported with its progress."),
    )
    # One field for both origins: a run has one trigger, and it says which this is.
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent run"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        help_text=_(
            "Trigger re-run: the past run this one re-runs, with its arguments and scheduled "
            "time. Trigger chain: the run whose outcome started this one."
        ),
    )
    kwargs = models.JSONField(
        _("keyword arguments of this run"),
        null=True,
        blank=True,
        help_text=_(
            "What the run was called with when they were not the job's own (run now with "
            "other keyword arguments, or a re-run of such a run); empty: the job's."
        ),
    )
    backfill = models.ForeignKey(
        "Backfill",
        verbose_name=_("backfill"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executions",
    )
    sent_at = models.DateTimeField(
        _("sent at"),
        null=True,
        blank=True,
        help_text=_(
            "When the run was sent to the broker (by beat, for a scheduled run). A run not "
            "sent by the schedule (run now, re-run, backfill) counts its misfire grace from "
            "then, not from its scheduled (logical) time."
        ),
    )
    task_result = models.ForeignKey(
        TaskResult,
        verbose_name=_("Celery task result"),
        to_field="task_id",
        db_column="task_id",
        db_constraint=False,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
    )

    class Meta:
        verbose_name = _("execution")
        verbose_name_plural = _("executions")
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["job", "status"], name="execution_job_status_idx"),
            models.Index(
                fields=["job", "started_at"],
                include=["duration", "status"],
                name="execution_job_stats_idx",
            ),
            # Which summary covers a fire time (a late message, the ledger, accounting).
            models.Index(
                fields=["job", "missed_until"],
                condition=models.Q(missed_until__isnull=False),
                name="execution_missed_summary_idx",
            ),
        ]
        constraints = [
            # One row per fire time and attempt: a duplicate message never runs twice.
            models.UniqueConstraint(
                fields=["job", "scheduled_at", "attempt"],
                condition=models.Q(trigger="schedule"),
                name="execution_unique_fire_time",
            ),
            # One row per message and attempt, whatever sent it: a manual run's message
            # delivered twice never runs twice either.
            models.UniqueConstraint(
                fields=["task_result", "attempt"],
                condition=models.Q(task_result__isnull=False),
                name="execution_unique_message",
            ),
        ]

    def __str__(self) -> str:
        # In UTC, said so: a model's name has no job timezone to hand (the admin pages do).
        return f"{self.job_name} @ {self.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC ({self.status})"

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS_STATUSES

    @property
    def progress_text(self) -> str:
        return progress_text(self.progress, self.progress_message)

    @property
    def fire_time_count(self) -> int:
        """How many fire times this row stands for: 1, or a summary's count."""
        return self.missed_count or 1

    def covers(self, fire_time: dt.datetime) -> bool:
        """Whether this row explains ``fire_time``: its own, or one inside its summary."""
        if self.missed_until is None or self.scheduled_at is None:
            return fire_time == self.scheduled_at
        return self.scheduled_at <= fire_time <= self.missed_until

    @property
    def lateness(self) -> float | None:
        """Seconds between the fire time and the start."""
        if self.scheduled_at is None:
            return None
        return (self.started_at - self.scheduled_at).total_seconds()


class JobLink(models.Model):
    """One step of a chain: a finished run of ``upstream`` whose outcome meets
    ``condition`` starts a run of ``downstream`` (trigger chain, its parent the upstream
    run), with the upstream run's result as the keyword argument ``pass_result_as`` when
    that is set. Saved through :mod:`scheduling.chain_services`, which refuses a cycle."""

    upstream = models.ForeignKey(
        Job, verbose_name=_("job"), on_delete=models.CASCADE, related_name="links_out"
    )
    downstream = models.ForeignKey(
        Job, verbose_name=_("then start"), on_delete=models.CASCADE, related_name="links_in"
    )
    condition = models.CharField(
        _("when"), max_length=10, choices=ChainCondition.choices, default=ChainCondition.SUCCESS
    )
    pass_result_as = models.CharField(
        _("pass the result as"),
        max_length=100,
        blank=True,
        validators=[kwarg_name_validator],
        help_text=_(
            "Keyword argument that receives the run's result (its stored JSON; a result "
            "too big or not JSON comes as that stored text); empty: not passed."
        ),
    )

    class Meta:
        verbose_name = _("next job")
        verbose_name_plural = _("next jobs (chain)")
        ordering = ["upstream", "downstream__name"]
        constraints = [
            models.UniqueConstraint(fields=["upstream", "downstream"], name="job_link_unique")
        ]

    def __str__(self) -> str:
        return f"{self.upstream.name} -> {self.downstream.name} ({self.condition})"


class RunOverride(models.Model):
    """The keyword arguments of one run sent with other ones than its job's (run now with
    overrides, a re-run of such a run), kept here under its Celery task id until its worker
    starts it: secrets never travel through the broker, the message names only the job."""

    task_id = models.CharField(_("task id"), max_length=255, primary_key=True)
    kwargs = models.JSONField(_("keyword arguments"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("run override")
        verbose_name_plural = _("run overrides")

    def __str__(self) -> str:
        return self.task_id


class BackfillState(models.TextChoices):
    """Where a backfill is: sending its runs, done sending, or cancelled."""

    RUNNING = "running", _("Sending")
    DONE = "done", _("Done")
    CANCELLED = "cancelled", _("Cancelled")


class BackfillReprocess(models.TextChoices):
    """Which fire times of the range a backfill sends, by what is on record for them."""

    MISSING = "missing", _("Missing: never ran (no record, missed or skipped)")
    FAILED = "failed", _("Missing and failed (also failed, timed out, lost, stopped)")
    ALL = "all", _("All fire times")


class Backfill(models.Model):
    """Runs of a job for the fire times of a past range, sent at a throttled rate
    (``BACKFILL_RATE``) below the job's priority; one :class:`BackfillRun` row explains
    each fire time of the range."""

    job = models.ForeignKey(
        Job, verbose_name=_("job"), null=True, on_delete=models.SET_NULL, related_name="backfills"
    )
    job_name = models.CharField(_("job name"), max_length=200)
    start = models.DateTimeField(_("from"), help_text=_("Inclusive."))
    end = models.DateTimeField(_("until"), help_text=_("Exclusive."))
    timezone = models.CharField(_("timezone"), max_length=63)
    reprocess = models.CharField(_("reprocess"), max_length=10, choices=BackfillReprocess.choices)
    overlap = models.CharField(
        _("overlap policy"),
        max_length=20,
        blank=True,
        help_text=_("This backfill's overlap policy; empty: the job's."),
    )
    state = models.CharField(
        _("state"), max_length=10, choices=BackfillState.choices, db_index=True
    )
    created_by = models.CharField(_("started by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("started"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    cancelled_by = models.CharField(_("cancelled by"), max_length=150, blank=True)
    next_send_at = models.DateTimeField(
        _("next send"), null=True, blank=True, help_text=_("When the next run may be sent.")
    )
    total_count = models.PositiveIntegerField(_("fire times"), default=0)
    skipped_count = models.PositiveIntegerField(_("not sent (on record)"), default=0)
    sent_count = models.PositiveIntegerField(_("sent"), default=0)
    cancelled_count = models.PositiveIntegerField(_("cancelled before sent"), default=0)

    class Meta:
        verbose_name = _("backfill")
        verbose_name_plural = _("backfills")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.job_name} {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M}"

    @property
    def pending_count(self) -> int:
        """Fire times still to send."""
        return max(
            self.total_count - self.skipped_count - self.sent_count - self.cancelled_count, 0
        )


class BackfillRunState(models.TextChoices):
    """What a backfill did with one fire time."""

    PENDING = "pending", _("Not sent yet")
    SENT = "sent", _("Sent")
    SKIPPED = "skipped", _("Not sent: on record")
    CANCELLED = "cancelled", _("Cancelled before sent")


class BackfillRun(models.Model):
    """One fire time of a backfill: what was on record for it, and what the backfill did
    (sent it, as the run of ``task_id``; left it, as ``existing`` says; or cancelled it)."""

    backfill = models.ForeignKey(
        Backfill, verbose_name=_("backfill"), on_delete=models.CASCADE, related_name="runs"
    )
    scheduled_at = models.DateTimeField(_("fire time"))
    existing = models.CharField(
        _("on record"), max_length=10, blank=True, choices=ExecutionStatus.choices
    )
    state = models.CharField(_("state"), max_length=10, choices=BackfillRunState.choices)
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    task_id = models.CharField(_("task id"), max_length=255, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("backfill fire time")
        verbose_name_plural = _("backfill fire times")
        ordering = ["scheduled_at"]
        indexes = [
            models.Index(fields=["backfill", "state", "scheduled_at"], name="backfill_run_idx")
        ]

    def __str__(self) -> str:
        return f"{self.scheduled_at.isoformat()} {self.state}"


class BeatHeartbeat(models.Model):
    """When each beat process last ran its loop: health checks and monitoring read it."""

    name = models.CharField(_("beat"), max_length=255, unique=True, help_text=_("host:pid"))
    started_at = models.DateTimeField(_("started"))
    last_tick_at = models.DateTimeField(_("last tick"), db_index=True)

    class Meta:
        verbose_name = _("beat heartbeat")
        verbose_name_plural = _("beat heartbeats")

    def __str__(self) -> str:
        return self.name


class SchedulerLease(models.Model):
    """Leadership among beat processes: the one holding the lease dispatches, others wait.

    The holder renews it every third of its term and inside the very transaction that
    sends due jobs, so a beat that lost it (a standby took over after it expired) cannot
    send anything more; ``token`` grows with every change of holder (a fencing token).
    """

    name = models.CharField(_("name"), max_length=50, primary_key=True)
    holder = models.CharField(_("holder"), max_length=255, blank=True, help_text=_("host:pid"))
    token = models.PositiveBigIntegerField(_("token"), default=0)
    acquired_at = models.DateTimeField(_("acquired"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)

    class Meta:
        verbose_name = _("scheduler lease")
        verbose_name_plural = _("scheduler leases")

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or '-'}"


class SentFireTime(models.Model):
    """A fire time beat sent, until it is checked: the ledger that explains a run whose
    message never reached a worker, kept in the database so that whichever beat leads
    next checks what an earlier leader sent."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")
    scheduled_at = models.DateTimeField(_("fire time"))
    check_after = models.DateTimeField(
        _("check after"),
        db_index=True,
        help_text=_("By then its run has started, or it is recorded as missed."),
    )

    class Meta:
        verbose_name = _("sent fire time")
        verbose_name_plural = _("sent fire times")
        constraints = [
            models.UniqueConstraint(fields=["job", "scheduled_at"], name="sent_fire_time_unique")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} @ {self.scheduled_at:%Y-%m-%d %H:%M:%S}"


class InstalledDefault(models.Model):
    """A default job that was installed once; it is never installed again, even if removed."""

    name = models.CharField(_("job name"), max_length=200, unique=True)
    installed_at = models.DateTimeField(_("installed"), auto_now_add=True)

    class Meta:
        verbose_name = _("installed default job")
        verbose_name_plural = _("installed default jobs")

    def __str__(self) -> str:
        return self.name


class AuditSource(models.TextChoices):
    """Through what a job was changed."""

    ADMIN = "admin", _("Admin")
    COMMAND = "command", _("Command")
    IMPORT = "import", _("Import")
    API = "api", _("API")
    SYSTEM = "system", _("System")


class JobChange(models.Model):
    """One change to a job: who, when, through what, and what changed field by field."""

    job = models.ForeignKey(
        Job, verbose_name=_("job"), null=True, on_delete=models.SET_NULL, related_name="changes"
    )
    job_name = models.CharField(_("job name"), max_length=200, db_index=True)
    action = models.CharField(_("action"), max_length=20)
    source = models.CharField(_("source"), max_length=10, choices=AuditSource.choices)
    actor = models.CharField(_("who"), max_length=150, blank=True)
    at = models.DateTimeField(_("when"), db_index=True)
    changes = models.JSONField(_("changes"), default=dict, blank=True)

    class Meta:
        verbose_name = _("job change")
        verbose_name_plural = _("job changes (audit trail)")
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.job_name} {self.action} by {self.actor or self.source}"


class JobDailyStats(models.Model):
    """Runs of one job on one (UTC) day with one outcome, kept up to date as runs finish.

    Serves the dashboard, the slow-jobs report and the Prometheus metrics without
    scanning the executions table. Duration buckets are counts (not cumulative) with
    upper bounds ``DURATION_BUCKETS`` seconds, the last one unbounded.
    """

    DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300)

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="daily_stats")
    day = models.DateField(db_index=True)
    status = models.CharField(max_length=10, choices=ExecutionStatus.choices)
    count = models.PositiveIntegerField(default=0)
    duration_count = models.PositiveIntegerField(default=0)
    duration_sum = models.FloatField(default=0)
    duration_min = models.FloatField(null=True)
    duration_max = models.FloatField(null=True)
    lateness_count = models.PositiveIntegerField(default=0)
    lateness_sum = models.FloatField(default=0)
    b0 = models.PositiveIntegerField(default=0)
    b1 = models.PositiveIntegerField(default=0)
    b2 = models.PositiveIntegerField(default=0)
    b3 = models.PositiveIntegerField(default=0)
    b4 = models.PositiveIntegerField(default=0)
    b5 = models.PositiveIntegerField(default=0)
    b6 = models.PositiveIntegerField(default=0)
    b7 = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("daily statistics")
        verbose_name_plural = _("daily statistics")
        constraints = [
            models.UniqueConstraint(fields=["job", "day", "status"], name="daily_stats_unique")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} {self.day} {self.status}: {self.count}"


class AlertKind(models.TextChoices):
    """What an alert is about."""

    FAILURE = "failure", _("Failure")
    MISSED = "missed", _("Missed run")
    SLOW = "slow", _("Slow run")
    DEADMAN = "deadman", _("No successful run (dead man's switch)")
    PAUSED = "paused", _("Paused after failures")


class AlertState(models.TextChoices):
    """Whether an alert notice says a problem started or ended."""

    FIRING = "firing", _("Firing")
    RESOLVED = "resolved", _("Resolved")


class JobAlertStatus(models.Model):
    """Whether an alert of one kind is currently firing for a job (alerts go on change)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="alert_status")
    kind = models.CharField(max_length=10, choices=AlertKind.choices)
    firing = models.BooleanField(default=False)
    since = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "kind"], name="alert_status_unique")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.kind}: {'firing' if self.firing else 'ok'}"


class Alert(models.Model):
    """One alert or recovery notice, and how its delivery went."""

    job = models.ForeignKey(
        Job, verbose_name=_("job"), null=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    job_name = models.CharField(_("job name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=10, choices=AlertKind.choices)
    state = models.CharField(_("state"), max_length=10, choices=AlertState.choices)
    message = models.TextField(_("message"))
    created_at = models.DateTimeField(_("when"), db_index=True)
    deliveries = models.JSONField(_("deliveries"), default=list, blank=True)

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.job_name}: {self.kind} {self.state}"


class ApiPrivilege(models.TextChoices):
    """What an API key may do: read jobs and runs, run them (and cancel runs), pause and
    resume them, edit them (create, change, delete)."""

    READ = "read", _("Read")
    RUN = "run", _("Run")
    PAUSE = "pause", _("Pause")
    EDIT = "edit", _("Edit")


class ApiKey(models.Model):
    """A key of the REST API: scoped by privileges and a job-name glob, with an expiry.

    The key itself is shown once, when it is created, and never stored: the row keeps
    its ``prefix`` (to find the row) and a salted SHA-256 hash of the rest. A key has
    256 random bits, so a fast hash suffices (a password hash would cost every request
    tens of milliseconds and buys nothing against a guess of 2^256).
    """

    #: What every key starts with (``sj_<prefix>_<secret>``), so a leaked one is recognised.
    PREFIX = "sj"

    name = models.CharField(
        _("name"),
        max_length=100,
        unique=True,
        help_text=_("Who uses the key, e.g. 'deploy-pipeline'; the audit trail names it."),
    )
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    salt = models.CharField(_("salt"), max_length=32, editable=False)
    key_hash = models.CharField(_("key hash"), max_length=64, editable=False)
    privileges = models.JSONField(
        _("privileges"),
        default=list,
        help_text=_("What the key may do: read, run, pause, edit."),
    )
    jobs = models.CharField(
        _("jobs"),
        max_length=200,
        default="*",
        help_text=_("Glob of the job names the key reaches, e.g. 'reports.*'; '*' for all."),
    )
    expires_at = models.DateTimeField(
        _("expires at"), null=True, blank=True, help_text=_("Empty: never expires.")
    )
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(
        _("last used"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("Updated at most once a minute."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.CharField(_("created by"), max_length=150, blank=True, editable=False)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def hash_secret(*, salt: str, secret: str) -> str:
        """The stored hash of a key's secret part."""
        return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()

    def clean(self) -> None:
        unknown = [p for p in self.privileges or [] if p not in ApiPrivilege.values]
        if not isinstance(self.privileges, list) or unknown or not self.privileges:
            raise ValidationError(
                {
                    "privileges": _("Give one or more of %(choices)s.")
                    % {"choices": ", ".join(ApiPrivilege.values)}
                }
            )
        if self._state.adding and self.expires_at and self.expires_at <= dj_timezone.now():
            raise ValidationError({"expires_at": _("The expiry time has already passed.")})
        if "[" in self.jobs or "]" in self.jobs:
            raise ValidationError(
                {"jobs": _("Use * (any text) and ? (one character) only in the job glob.")}
            )

    @property
    def active(self) -> bool:
        """Neither revoked nor expired."""
        return self.state == "active"

    @property
    def state(self) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= dj_timezone.now():
            return "expired"
        return "active"

    def reaches(self, job_name: str) -> bool:
        """Whether the key's job glob matches ``job_name``."""
        return fnmatch.fnmatchcase(job_name, self.jobs or "*")  # no [...]: clean() refuses it
