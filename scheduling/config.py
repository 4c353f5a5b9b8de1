"""Job definitions as JSON: the seed design's task-config shape, extended with what our
jobs have.

One entry::

    {
      "task_id": "daily_cleanup",            # the job's name (its unique key)
      "task_name": "Daily cleanup",          # Job.title
      "task_func": "maintenance.cleanup",    # a registered task
      "trigger_type": "cron",                # cron | interval | date
      "trigger_args": {"expression": "0 0 2 * * *"},
      "enabled": true,
      "description": "...",
      "timezone": "Asia/Shanghai",
      "args": [], "kwargs": {},
      "options": {"group": "maintenance", "coalesce": false, "max_instances": 3,
                  "misfire_grace_time": 15,
                  "start_at": "2026-12-01T09:00:00+08:00", "end_at": null, "max_runs": 10}
    }

The validity window's ``start_at`` and ``end_at`` are ISO 8601 date-times (or null); one
without an offset is a wall-clock time in the job's timezone, read by the cron rules'
daylight-saving policy (:func:`scheduling.schedules.parse_moment`). Export writes them
in the job's timezone with their offset.

``trigger_args`` also takes APScheduler's style: cron fields
(``{"hour": 2, "minute": 0}``; APScheduler's day_of_week counts from Monday = 0; its
day expressions ``last``, ``3rd fri``, ``last fri`` and its ``year`` and ``week`` work),
``{"minutes": 30}`` for intervals and ``{"run_date": "2024-12-31 23:59:59"}`` (in the job's
timezone when it has no offset) for dates, and APScheduler's ``start_date`` and
``end_date`` beside them (the window's ``start_at`` and ``end_at``). A file is either that list or an object with a
``"jobs"`` list (backups add ``"executions"``, which import ignores).
"""

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from scheduling import conf, schedules
from scheduling.models import CalendarRule, Job, JobGroup, TriggerType

FORMAT = "scheduled-jobs/v1"
ENTRY_KEYS = {
    "task_id",
    "task_name",
    "task_func",
    "trigger_type",
    "trigger_args",
    "enabled",
    "description",
    "timezone",
    "args",
    "kwargs",
    "options",
}
REQUIRED_KEYS = ("task_id", "task_func", "trigger_type", "trigger_args")
#: Why and until when a paused job (``enabled`` false) is paused: ``options.pause_reason``
#: and ``options.resume_at``, written only when set.
PAUSE_KEYS = ("pause_reason", "resume_at")
OPTION_KEYS = set(Job.OPTION_FIELDS) | set(Job.WINDOW_FIELDS) | {"calendars", "then", *PAUSE_KEYS}
#: The keys of a calendar's exclusion in a file (its fields; empty ones left out).
RULE_KEYS = CalendarRule.FIELDS
#: A group's settings in a file (what ``jobs group set`` sets), each a field of
#: :class:`~scheduling.models.JobGroup`, and what one left out means.
GROUP_SETTINGS = ("max_instances", "queue", "alert_emails", "alert_webhooks")
GROUP_DEFAULTS = {key: JobGroup._meta.get_field(key).get_default() for key in GROUP_SETTINGS}
#: Why, by whom and since when a paused group (``"paused": true``) is paused.
GROUP_PAUSE_KEYS = ("pause_reason", "paused_by", "paused_at")
GROUP_KEYS = ("name", *GROUP_SETTINGS, "paused", *GROUP_PAUSE_KEYS)
#: APScheduler's trigger arguments for the validity window, and the options they stand for.
APS_WINDOW_KEYS = {"start_date": "start_at", "end_date": "end_at"}
CRON_KEYS = ("second", "minute", "hour", "day", "month", "day_of_week", "year", "week")
APS_FIELD_ORDER = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
APS_DEFAULTS = {
    "year": "*",
    "month": "1",
    "day": "1",
    "week": "*",
    "day_of_week": "*",
    "hour": "0",
    "minute": "0",
    "second": "0",
}
APS_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ConfigError(ValidationError):
    """A config file with problems; ``problems`` lists each one, naming the entry and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(problems)

    def __str__(self) -> str:
        return "; ".join(self.problems)


@dataclass
class JobSpec:
    """One job definition read from a config file, validated, ready to save."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    #: The names of its exclusion calendars (``options.calendars``; none if left out).
    calendars: list[str] = field(default_factory=list)
    #: Its chain links (``options.then``, :mod:`scheduling.chain_services`; none if left out).
    then: list[Any] = field(default_factory=list)
    #: A paused job's ``pause_reason`` and ``resume_at`` (``None``: not given).
    pause: dict[str, Any] | None = None


@dataclass
class GroupSpec:
    """One job group read from a config file: its settings (:data:`GROUP_SETTINGS`) and,
    when the file says it is paused, ``{"reason", "by", "at"}`` (``None``: not paused)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    pause: dict[str, Any] | None = None


@dataclass
class CalendarSpec:
    """One exclusion calendar read from a config file: its name, description and
    exclusions (unsaved :class:`~scheduling.models.CalendarRule` rows, validated)."""

    name: str
    description: str = ""
    rules: list[Any] = field(default_factory=list)


def _aps_day_of_week(value: str) -> str:
    """APScheduler's day_of_week (Monday = 0) as cron's (Sunday = 0, Monday = 1).

    Names mean the same in both and are kept; numbers, ``*`` and steps are turned into the
    cron numbers of the days they name (``*/2`` is Mon, Wed, Fri, Sun in APScheduler).
    """
    parts = []
    for item in re.split(r" *, *", value.strip().lower()):
        names = re.fullmatch(r"([a-z]+)(?:-([a-z]+))?", item)
        if names:
            if any(n and n not in APS_WEEKDAYS for n in names.groups()):
                raise ValueError(f"day_of_week {value!r}: {item!r} is not a weekday name")
            if names[2] and APS_WEEKDAYS.index(names[1]) > APS_WEEKDAYS.index(names[2]):
                raise ValueError(f"day_of_week {value!r} has an empty range {item!r}")
            parts.append(item)
            continue
        days = _aps_numbers(item, 0, 6)
        if days is None:
            raise ValueError(f"day_of_week {value!r}: {item!r} is not 0-6, a name, * or a range")
        parts.append(",".join(str((d + 1) % 7) for d in days))
    return ",".join(parts)


def _aps_numbers(item: str, low: int, high: int) -> list[int] | None:
    """The values of APScheduler's ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, ``a/n``."""
    match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", item)
    if not match or (match[1] == "*" and match[2]):
        return None
    first = low if match[1] == "*" else int(match[1])
    last = int(match[2]) if match[2] else (high if match[3] or match[1] == "*" else first)
    step = int(match[3] or 1)
    if not low <= first <= last <= high or step < 1:
        return None
    return list(range(first, last + 1, step))


_APS_POSITION = re.compile(r"(1st|2nd|3rd|4th|5th|last) +([a-z]+)")


def _aps_day(value: str) -> tuple[str, str]:
    """APScheduler's day field as cron's (day of month, day of week).

    ``last`` is the month's last day (``L``), ``3rd fri`` the third Friday (``5#3``),
    ``last fri`` the last Friday (``5L``); in a list (``1,last fri``) any item matches,
    which is what cron does with a day of month and a day of week both given.
    """
    month_days, weekdays = [], []
    for item in re.split(r" *, *", value.strip().lower()):
        position = _APS_POSITION.fullmatch(item)
        if item == "last":
            month_days.append("L")
        elif position:
            if position[2] not in APS_WEEKDAYS:
                raise ValueError(f"day {value!r}: {position[2]!r} is not a weekday name")
            weekday = (APS_WEEKDAYS.index(position[2]) + 1) % 7
            which = position[1]
            weekdays.append(f"{weekday}L" if which == "last" else f"{weekday}#{which[0]}")
        elif " " in item:
            raise ValueError(
                f"day {value!r}: {item!r} is not a day, a range, 'last', 'last fri' or '3rd fri'"
            )
        else:
            month_days.append(item)
    return ",".join(month_days) or "?", ",".join(weekdays) or "*"


def cron_from_trigger_args(trigger_args: dict[str, Any]) -> str:
    """A cron expression from ``{"expression": ...}`` or APScheduler cron fields.

    APScheduler's fields are ``year``, ``month``, ``day``, ``week`` (ISO week),
    ``day_of_week``, ``hour``, ``minute``, ``second``. As in APScheduler, fields less
    significant than the least significant one given default to their minimum (``day``
    and ``month`` 1, times 0), except ``week`` and ``day_of_week``; the others to ``*``.
    """
    if "expression" in trigger_args:
        extra = set(trigger_args) - {"expression"}
        if extra:
            raise ValueError(f"give either 'expression' or cron fields, not both ({sorted(extra)})")
        return schedules.normalize_cron(str(trigger_args["expression"]))
    unknown = set(trigger_args) - set(CRON_KEYS)
    if unknown:
        raise ValueError(f"unknown cron fields {sorted(unknown)}; use {list(CRON_KEYS)}")
    if not trigger_args:
        raise ValueError("give 'expression' or at least one cron field")
    values: dict[str, str] = {}
    remaining = set(trigger_args)
    for key in APS_FIELD_ORDER:
        if key in trigger_args:
            value = str(trigger_args[key]).strip()
            if not value or (" " in value and key != "day"):
                raise ValueError(f"cron field {key!r} must be one non-empty value, not {value!r}")
            remaining.discard(key)
            values[key] = value
        else:
            values[key] = APS_DEFAULTS[key] if not remaining else "*"
    month_day, weekday = _aps_day(values["day"])
    if values["day_of_week"] != "*":
        if weekday != "*" or month_day not in ("*", "?"):
            raise ValueError(
                "APScheduler runs only on days that match both 'day' and 'day_of_week', cron "
                "on days that match either: give one of them (e.g. day='1st mon' for the "
                "first Monday of the month)"
            )
        weekday = _aps_day_of_week(values["day_of_week"])
    fields = [values["second"], values["minute"], values["hour"], month_day, values["month"]]
    fields += [weekday, values["year"], values["week"]]
    return schedules.normalize_cron(" ".join(fields))


def _interval_from_trigger_args(trigger_args: dict[str, Any]) -> tuple[int, str]:
    given = {k: v for k, v in trigger_args.items() if v not in (None, 0)}
    unknown = set(trigger_args) - set(schedules.INTERVAL_UNITS)
    if unknown or len(given) != 1:
        raise ValueError(
            f"give exactly one of {list(schedules.INTERVAL_UNITS)} with a whole number, "
            f'e.g. {{"minutes": 30}}'
        )
    ((period, every),) = given.items()
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"{period} must be a whole number of at least 1")
    return every, period


def _date_from_trigger_args(trigger_args: dict[str, Any], tz_name: str) -> dt.datetime:
    if set(trigger_args) != {"run_date"}:
        raise ValueError('give {"run_date": "YYYY-MM-DD HH:MM:SS"}')
    # In UTC, as stored: a wall-clock time that occurs twice compares equal to itself.
    return _moment("run_date", trigger_args["run_date"], tz_name)


def _moment(key: str, value: Any, tz_name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an ISO date-time string such as 2026-12-31 23:59:59")
    try:
        schedules.get_timezone(tz_name)
    except ValueError as exc:
        raise ValueError(f"{key} is read in the job's timezone: {exc}") from None
    try:
        return schedules.parse_moment(value, tz_name)
    except ValueError as exc:
        raise ValueError(f"{key} {exc}") from None


def _window_from_entry(
    options: dict[str, Any], trigger_args: dict[str, Any], tz_name: str
) -> tuple[dict[str, Any], list[str]]:
    """The validity window of an entry: ``start_at``, ``end_at`` (date-times or null) and
    ``max_runs`` from its options, or APScheduler's ``start_date`` and ``end_date`` from its
    trigger arguments; and the problems found."""
    window: dict[str, Any] = {"max_runs": options.get("max_runs")}
    problems = []
    for aps_key, name in APS_WINDOW_KEYS.items():
        if name in options and aps_key in trigger_args:
            problems.append(f"give options.{name} or trigger_args.{aps_key}, not both")
            continue
        if aps_key in trigger_args:
            place, key, value = "trigger_args", aps_key, trigger_args[aps_key]
        else:
            place, key, value = "options", name, options.get(name)
        if value is None:
            window[name] = None
            continue
        try:
            window[name] = _moment(key, value, tz_name)
        except ValueError as exc:
            problems.append(f"{place}: {exc}")
    return window, problems


def _entry_to_spec(entry: Any, where: str) -> tuple[JobSpec | None, list[str]]:
    if not isinstance(entry, dict):
        return None, [f"{where}: must be a JSON object"]
    problems = [f"{where}: missing {key!r}" for key in REQUIRED_KEYS if key not in entry]
    problems += [f"{where}: unknown key {key!r}" for key in sorted(set(entry) - ENTRY_KEYS)]
    options = entry.get("options", {})
    if not isinstance(options, dict):
        problems.append(f"{where}: 'options' must be an object")
        options = {}
    problems += [f"{where}: unknown option {key!r}" for key in sorted(set(options) - OPTION_KEYS)]
    if problems:
        return None, problems
    name = entry["task_id"]
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        return None, [f"{where}: 'task_id' must be a non-empty string"]
    where = f"{where} ({name})"
    tz_name = entry.get("timezone") or conf.get("DEFAULT_TIMEZONE")
    fields: dict[str, Any] = {
        "title": entry.get("task_name", ""),
        "description": entry.get("description", ""),
        "group": options.get("group", _option_default("group")),
        "task": entry["task_func"],
        "args": entry.get("args", []),
        "kwargs": entry.get("kwargs", {}),
        "enabled": entry.get("enabled", True),
        "trigger_type": entry["trigger_type"],
        "cron_expression": "",
        "interval_every": None,
        "interval_period": "minutes",
        "run_at": None,
        "timezone": tz_name,
        **{
            name: options[name] if name in options else _option_default(name)
            for name in Job.OPTION_FIELDS
            if name != "group"
        },
    }
    trigger_args = entry["trigger_args"]
    if not isinstance(trigger_args, dict):
        return None, [f"{where}: 'trigger_args' must be an object"]
    window, window_problems = _window_from_entry(options, trigger_args, tz_name)
    if window_problems:
        return None, [f"{where}: {problem}" for problem in window_problems]
    fields.update(window)
    trigger_args = {k: v for k, v in trigger_args.items() if k not in APS_WINDOW_KEYS}
    if not isinstance(fields["enabled"], bool):
        return None, [f"{where}: 'enabled' must be true or false"]
    calendars = options.get("calendars", [])
    if not isinstance(calendars, list) or not all(isinstance(c, str) for c in calendars):
        return None, [f"{where}: options.calendars must be a list of calendar names"]
    then, then_problems = _then_from_options(options, where)
    if then_problems:
        return None, then_problems
    pause, pause_problems = _pause_from_options(options, fields["enabled"], tz_name)
    if pause_problems:
        return None, [f"{where}: {problem}" for problem in pause_problems]
    try:
        if fields["trigger_type"] == TriggerType.CRON:
            fields["cron_expression"] = cron_from_trigger_args(trigger_args)
        elif fields["trigger_type"] == TriggerType.INTERVAL:
            fields["interval_every"], fields["interval_period"] = _interval_from_trigger_args(
                trigger_args
            )
        elif fields["trigger_type"] == TriggerType.DATE:
            fields["run_at"] = _date_from_trigger_args(trigger_args, tz_name)
        else:
            return None, [
                f"{where}: trigger_type {fields['trigger_type']!r} is not one of cron, interval, date"
            ]
    except ValueError as exc:
        return None, [f"{where}: trigger_args: {exc}"]
    type_problems = _type_problems(fields)
    if type_problems:
        return None, [f"{where}: {problem}" for problem in type_problems]
    job = Job(name=name, **fields)
    try:
        job.clean_fields(exclude=["schedule_anchor"])
        job.clean()
    except ValidationError as exc:
        return None, [
            f"{where}: {field_name}: {' '.join(messages)}"
            for field_name, messages in exc.message_dict.items()
        ]
    fields["cron_expression"] = job.cron_expression
    return (
        JobSpec(
            name=name,
            fields=fields,
            calendars=sorted(set(calendars)),
            then=then,
            pause=pause,
        ),
        [],
    )


def _then_from_options(options: dict[str, Any], where: str) -> tuple[list[Any], list[str]]:
    """The links of ``options.then`` (a list of ``{"job", "on", "as"}``) and their
    problems; the next jobs' names and cycles are checked with the whole document."""
    from scheduling import chain_services

    entries = options.get("then", [])
    if not isinstance(entries, list):
        return [], [f"{where}: options.then must be a list of links"]
    return chain_services.entries_parse(entries, f"{where}: options.then")


def _pause_from_options(
    options: dict[str, Any], enabled: bool, tz_name: str
) -> tuple[dict[str, Any] | None, list[str]]:
    """A paused job's reason and resume time from its options (``None`` when neither is
    given), and the problems: they need ``enabled`` false, a text, a date-time."""
    if not any(key in options for key in PAUSE_KEYS):
        return None, []
    if enabled:
        return None, ["options.pause_reason and options.resume_at need 'enabled': false"]
    reason, until = options.get("pause_reason") or "", options.get("resume_at")
    limit = Job._meta.get_field("pause_reason").max_length
    if not isinstance(reason, str) or len(reason) > limit:
        return None, [f"options.pause_reason must be a text of at most {limit} characters"]
    if until is not None:
        try:
            until = schedules.parse_moment(until, tz_name) if isinstance(until, str) else None
        except ValueError as exc:
            return None, [f"options.resume_at: {exc}"]
        if until is None:
            return None, ["options.resume_at must be an ISO 8601 date-time"]
    return {"reason": reason.strip(), "until": until}, []


def _option_default(name: str) -> Any:
    """The value an option takes when a file leaves it out: the model's default."""
    return Job._meta.get_field(name).get_default()


def _type_problems(fields: dict[str, Any], model: Any = Job) -> list[str]:
    """Values of the wrong JSON type for ``model``'s fields. Checked strictly: the model
    would convert them silently (5 to "5", "5" to 5), and a re-import would then never
    find the row unchanged."""
    from django.db import models

    problems = []
    for name, value in fields.items():
        field = model._meta.get_field(name)
        if value is None:
            if not field.null:
                problems.append(f"{name}: must not be null")
        elif isinstance(field, models.BooleanField):
            if not isinstance(value, bool):
                problems.append(f"{name}: must be true or false")
        elif isinstance(field, (models.CharField, models.TextField)):
            if not isinstance(value, str):
                problems.append(f"{name}: must be a string")
            elif "\x00" in value:
                problems.append(f"{name}: must not contain NUL characters")
        elif isinstance(field, models.IntegerField):
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{name}: must be a whole number")
        elif isinstance(field, models.FloatField) and (
            not isinstance(value, int | float) or isinstance(value, bool)
        ):
            problems.append(f"{name}: must be a number")
    return problems


def calendars_parse(data: Any) -> list[CalendarSpec]:
    """The ``"calendars"`` list of a config document (absent: none), validated; raise
    :class:`ConfigError` listing every problem, naming the calendar and the exclusion."""
    from scheduling.models import Calendar

    entries = data.get("calendars", []) if isinstance(data, dict) else []
    if not isinstance(entries, list):
        raise ConfigError(["'calendars' must be a list"])
    specs, problems, seen = [], [], set()
    for index, entry in enumerate(entries):
        where = f"calendars[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{where}: must be an object with a 'name'")
            continue
        where = f"{where} ({entry['name']})"
        unknown = sorted(set(entry) - {"name", "description", "rules"})
        problems += [f"{where}: unknown key {key!r}" for key in unknown]
        if entry["name"] in seen:
            problems.append(f"{where}: appears twice")
        seen.add(entry["name"])
        calendar = Calendar(name=entry["name"], description=entry.get("description", ""))
        try:
            calendar.full_clean(validate_unique=False)
        except ValidationError as exc:
            problems += [f"{where}: {f}: {' '.join(m)}" for f, m in exc.message_dict.items()]
        rules = []
        for number, item in enumerate(entry.get("rules", [])):
            place = f"{where}: rules[{number}]"
            if not isinstance(item, dict):
                problems.append(f"{place}: must be an object")
                continue
            bad = sorted(set(item) - set(RULE_KEYS))
            if bad:
                problems += [f"{place}: unknown key {key!r}" for key in bad]
                continue
            rule = CalendarRule(**{k: v for k, v in item.items() if v is not None})
            try:
                rule.full_clean(exclude=["calendar"])
            except ValidationError as exc:
                problems += [f"{place}: {f}: {' '.join(m)}" for f, m in exc.message_dict.items()]
                continue
            rules.append(rule)
        specs.append(CalendarSpec(entry["name"], calendar.description, rules))
    if problems:
        raise ConfigError(problems)
    return specs


def rule_to_entry(rule: Any) -> dict[str, Any]:
    """One exclusion as the file writes it: its non-empty fields, dates and times ISO."""
    entry = {}
    for name in RULE_KEYS:
        value = getattr(rule, name)
        if value in (None, ""):
            continue
        entry[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return entry


def calendar_to_entry(calendar: Any) -> dict[str, Any]:
    """One calendar in the config format (the inverse of :func:`calendars_parse`)."""
    return {
        "name": calendar.name,
        "description": calendar.description,
        "rules": [rule_to_entry(rule) for rule in calendar.rules.all()],
    }


def groups_parse(data: Any) -> list[GroupSpec]:
    """The ``"groups"`` list of a config document (absent: none), validated as a save of
    each group would validate it; raise :class:`ConfigError` listing every problem,
    naming the group and the field."""
    from scheduling import audit
    from scheduling.group_services import pause_reason_problem

    entries = data.get("groups", []) if isinstance(data, dict) else []
    if not isinstance(entries, list):
        raise ConfigError(["'groups' must be a list"])
    specs, problems, seen = [], [], set()
    for index, entry in enumerate(entries):
        where = f"groups[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip() or "\x00" in name:
            problems.append(f"{where}: must be an object with a non-empty 'name'")
            continue
        where = f"{where} ({name})"
        unknown = sorted(set(entry) - set(GROUP_KEYS))
        if unknown:
            problems += [f"{where}: unknown key {key!r}" for key in unknown]
            continue
        if name in seen:
            problems.append(f"{where}: appears twice")
        seen.add(name)
        fields = {key: entry.get(key, GROUP_DEFAULTS[key]) for key in GROUP_SETTINGS}
        entry_problems = _type_problems(fields, JobGroup)
        paused = entry.get("paused", False)
        if not isinstance(paused, bool):
            entry_problems.append("paused: must be true or false")
        pause_given = [key for key in GROUP_PAUSE_KEYS if key in entry]
        if pause_given and paused is not True:
            entry_problems += [f"{key}: needs 'paused': true" for key in pause_given]
        pause = None
        if paused is True and not entry_problems:
            pause, pause_problems = _group_pause_from_entry(entry)
            entry_problems += pause_problems
        if not entry_problems:
            group = JobGroup(name=name, **fields)
            try:
                group.full_clean(validate_unique=False)
            except ValidationError as exc:
                entry_problems += [f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items()]
        if not entry_problems and pause is not None:
            group.paused_by = audit.current().actor if pause["by"] is None else pause["by"]
            group.pause_reason = pause["reason"]
            problem = pause_reason_problem(group)
            if problem:
                entry_problems.append(f"pause_reason: {problem}")
        problems += [f"{where}: {problem}" for problem in entry_problems]
        if not entry_problems:
            specs.append(GroupSpec(name=name, fields=fields, pause=pause))
    if problems:
        raise ConfigError(problems)
    return specs


def _group_pause_from_entry(entry: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A paused group's reason, who paused it and when (``by`` and ``at`` ``None`` when
    left out: the importer, now), and the problems."""
    problems = []
    reason, by, at = (entry.get(key) for key in ("pause_reason", "paused_by", "paused_at"))
    for key, value in (("pause_reason", reason), ("paused_by", by)):
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            problems.append(f"{key}: must be a string")
    limit = JobGroup._meta.get_field("paused_by").max_length
    if isinstance(by, str) and len(by) > limit:
        problems.append(f"paused_by: must be at most {limit} characters")
    if at is not None:
        moment = None
        if isinstance(at, str):
            try:
                moment = dt.datetime.fromisoformat(at)
            except ValueError:
                moment = None
        if moment is None or moment.tzinfo is None:
            problems.append("paused_at: must be an ISO 8601 date-time with an offset")
        at = moment
    by = by.strip() if isinstance(by, str) else None
    return {"reason": (reason or "").strip(), "by": by, "at": at}, problems


def group_to_entry(group: Any) -> dict[str, Any]:
    """One group in the config format (the inverse of :func:`groups_parse`): its
    settings, whether it is paused and, when it is, why, by whom and since when."""
    entry = {"name": group.name, **{key: getattr(group, key) for key in GROUP_SETTINGS}}
    entry["paused"] = group.paused
    if group.paused:
        entry["pause_reason"] = group.pause_reason
        entry["paused_by"] = group.paused_by
        entry["paused_at"] = group.paused_at.isoformat()
    return entry


def config_parse(data: Any) -> list[JobSpec]:
    """Validate a whole config document; raise :class:`ConfigError` listing every problem."""
    entries = data.get("jobs") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigError(['the file must be a list of jobs or an object with a "jobs" list'])
    specs: list[JobSpec] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        spec, entry_problems = _entry_to_spec(entry, f"jobs[{index}]")
        problems += entry_problems
        if spec is not None:
            if spec.name in seen:
                problems.append(f"jobs[{index}]: task_id {spec.name!r} appears twice")
            seen.add(spec.name)
            specs.append(spec)
    if problems:
        raise ConfigError(problems)
    return specs


def job_to_entry(job: Job) -> dict[str, Any]:
    """One job in the config format (the inverse of :func:`config_parse` for one entry)."""
    if job.trigger_type == TriggerType.CRON:
        trigger_args: dict[str, Any] = {"expression": job.cron_expression}
    elif job.trigger_type == TriggerType.INTERVAL:
        trigger_args = {job.interval_period: job.interval_every}
    else:
        local = job.run_at.astimezone(schedules.get_timezone(job.timezone))
        trigger_args = {"run_date": local.isoformat()}
    return {
        "task_id": job.name,
        "task_name": job.title,
        "task_func": job.task,
        "trigger_type": job.trigger_type,
        "trigger_args": trigger_args,
        "enabled": job.enabled,
        "description": job.description,
        "timezone": job.timezone,
        "args": job.args,
        "kwargs": job.kwargs,
        "options": {
            **{name: getattr(job, name) for name in Job.OPTION_FIELDS},
            "start_at": _local_iso(job, job.start_at),
            "end_at": _local_iso(job, job.end_at),
            "max_runs": job.max_runs,
            # Only when it has some: a file of jobs without calendars stays as it was.
            **({"calendars": names} if (names := _calendar_names(job)) else {}),
            **({"then": links} if (links := _then_entries(job)) else {}),
            # Only for a paused job that says why or until when (likewise).
            **({"pause_reason": job.pause_reason} if not job.enabled and job.pause_reason else {}),
            **(
                {"resume_at": _local_iso(job, job.resume_at)}
                if not job.enabled and job.resume_at
                else {}
            ),
        },
    }


def _then_entries(job: Job) -> list[dict[str, str]]:
    from scheduling import chain_services

    return [spec.as_entry() for spec in chain_services.job_links(job)]


def _calendar_names(job: Job) -> list[str]:
    return sorted(calendar.name for calendar in job.calendars.all())


def _local_iso(job: Job, moment: dt.datetime | None) -> str | None:
    """A date-time of ``job`` as the file writes it: in the job's timezone, with its offset."""
    if moment is None:
        return None
    return moment.astimezone(schedules.get_timezone(job.timezone)).isoformat()


def _same_json(value: Any) -> Any:
    """JSON as stored: PostgreSQL's jsonb keeps a number's value, not its Python type."""
    if isinstance(value, bool) or not isinstance(value, int | float | dict | list):
        return value
    if isinstance(value, dict):
        return {k: _same_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_same_json(v) for v in value]
    return float(value)


def spec_differences(job: Job, spec: JobSpec) -> dict[str, tuple[Any, Any]]:
    """Fields whose stored value differs from the spec: ``{field: (old, new)}``."""
    return {
        name: (getattr(job, name), value)
        for name, value in spec.fields.items()
        if _same_json(getattr(job, name)) != _same_json(value)
    }


# The default maintenance jobs, as a config document.
DEFAULT_JOBS: list[dict[str, Any]] = [
    {
        "task_id": "daily_cleanup",
        "task_name": "Daily cleanup",
        "task_func": "maintenance.cleanup",
        "trigger_type": "cron",
        "trigger_args": {"hour": 2, "minute": 0},
        "description": "Delete old execution records and task results, disable finished "
        "one-off jobs, remove old backups.",
        "options": {"group": "maintenance"},
    },
    {
        "task_id": "health_check",
        "task_name": "Health check",
        "task_func": "maintenance.health_check",
        "trigger_type": "interval",
        "trigger_args": {"minutes": 30},
        "description": "Check the database, broker, workers, beat, disk and memory.",
        "options": {"group": "maintenance"},
    },
    {
        "task_id": "data_backup",
        "task_name": "Data backup",
        "task_func": "maintenance.backup",
        "trigger_type": "cron",
        "trigger_args": {"hour": 3, "minute": 0},
        "description": "Write a timestamped export of all jobs and recent runs.",
        "options": {"group": "maintenance"},
    },
]
