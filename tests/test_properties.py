"""Properties that hold for any input: the cron parser, job arguments, import files and the
admin form never crash, name what is wrong, and save nothing when they refuse.

Each test draws many inputs with Hypothesis. Database tests run every example inside a
transaction that is rolled back, so each example starts from the same rows.
"""

import datetime as dt
import json
from contextlib import contextmanager

import pytest
from croniter import croniter
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from scheduling import services
from scheduling.config import CRON_KEYS, ENTRY_KEYS, ConfigError, config_parse
from scheduling.models import Job, JobChange
from scheduling.schedules import CronTrigger, describe_cron, normalize_cron
from tests.factories import make_job
from tests.test_admin import form_data

UTC = dt.UTC

# No example database: failing examples are not saved under .hypothesis/ and replayed.
FAST = settings(max_examples=150, deadline=None, database=None)
DB = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@contextmanager
def rolled_back():
    """Run one example in a transaction that is always rolled back."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


# --- strategies ------------------------------------------------------------------------------

DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "mon", "Fri"]
MONTH_NAMES = ["JAN", "FEB", "MAR", "JUN", "DEC", "jan", "Dec"]
small = st.integers(min_value=0, max_value=70).map(str)

cron_atom = st.one_of(
    st.sampled_from(["*", "?", "L", "W", "LW", "#", "/", "-", ",", ""]),
    small,
    st.sampled_from(DAY_NAMES + MONTH_NAMES),
    st.tuples(small, small).map("-".join),
    st.tuples(st.sampled_from(DAY_NAMES), st.sampled_from(DAY_NAMES)).map("-".join),
    st.tuples(small, small).map("#".join),
    small.map(lambda n: f"{n}L"),
    small.map(lambda n: f"{n}W"),
)
cron_item = st.tuples(cron_atom, st.none() | small).map(
    lambda pair: pair[0] if pair[1] is None else f"{pair[0]}/{pair[1]}"
)
cron_field = st.lists(cron_item, min_size=1, max_size=3).map(",".join)
cron_like = st.tuples(
    st.lists(cron_field, min_size=0, max_size=8),
    st.sampled_from([" ", "  ", "\t", " \n "]),
).map(lambda pair: pair[1].join(pair[0]))


def _in_range_field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy:
    """A field that is usually valid for the range low..high (sometimes off by a little)."""
    number = st.integers(min_value=low, max_value=high)
    options = [
        st.just("*"),
        number.map(str),
        st.tuples(number, st.integers(1, high - low + 1)).map(lambda p: f"{p[0]}/{p[1]}"),
        st.integers(1, high - low + 1).map(lambda k: f"*/{k}"),
        st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}"),
        st.lists(number, min_size=1, max_size=4).map(lambda ns: ",".join(map(str, ns))),
    ]
    if names:
        options.append(st.sampled_from(names))
    return st.one_of(*options)


valid_leaning_cron = st.tuples(
    _in_range_field(0, 59),
    _in_range_field(0, 59),
    _in_range_field(0, 23),
    st.one_of(
        _in_range_field(1, 31), st.sampled_from(["L", "?", "15W", "L-3", "LW", "1,L", "31W"])
    ),
    _in_range_field(1, 12, MONTH_NAMES),
    st.one_of(
        _in_range_field(0, 7, DAY_NAMES),
        st.sampled_from(["?", "1#2", "5L", "MON-FRI", "FRIL", "5#5", "5#3,0L"]),
    ),
    st.booleans(),
).map(lambda f: " ".join(f[1:6] if f[6] else f[:6]))  # sometimes classic 5-field cron
# With a year field and an ISO week field sometimes.
valid_leaning_cron = st.tuples(
    valid_leaning_cron,
    st.sampled_from(["", " 2030", " 1990-2099/7", " *", " 2026,2090"]),
    st.sampled_from(["", "", " 10", " 1-3,52"]),
).map(lambda p: p[0] + (p[1] or (" *" if p[2] else "")) + p[2] if len(p[0].split()) == 6 else p[0])

moments = st.datetimes(
    min_value=dt.datetime(1970, 1, 1),
    max_value=dt.datetime(2200, 12, 31),
    timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=-5))]),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=12,
)


# --- 1. the cron parser ----------------------------------------------------------------------


def _assert_normalizes_or_names_the_problem(expression: str) -> None:
    try:
        result = normalize_cron(expression)
    except ValueError as exc:
        assert "field" in str(exc), f"{expression!r}: {exc}"
    else:
        assert len(result.split()) in (6, 7, 8)
        assert normalize_cron(result) == result  # the stored form reads back as itself
        if len(result.split()) == 6 and not any(c in result.upper() for c in "LW#"):
            assert croniter.is_valid(result, second_at_beginning=True)


@FAST
@given(expression=st.text())
def test_cron_parser_never_crashes_and_names_the_problem(expression):
    _assert_normalizes_or_names_the_problem(expression)


@FAST
@given(expression=st.one_of(cron_like, valid_leaning_cron))
def test_cron_parser_names_the_problem_in_cron_like_text(expression):
    _assert_normalizes_or_names_the_problem(expression)


def _valid_trigger(expression: str, timezone: str) -> CronTrigger:
    try:
        return CronTrigger(expression, timezone)
    except ValueError:
        assume(False)
        raise


@FAST
@given(expression=valid_leaning_cron, after=moments)
def test_next_cron_fire_time_is_utc_and_strictly_later(expression, after):
    trigger = _valid_trigger(expression, "UTC")
    moment = after
    for _ in range(5):
        nxt = trigger.next_after(moment)
        if nxt is None:
            break
        assert isinstance(nxt, dt.datetime)
        assert nxt.tzinfo is not None and nxt.utcoffset() == dt.timedelta(0)
        assert nxt > moment, f"{trigger}: {nxt} is not after {moment}"
        moment = nxt


@settings(FAST, max_examples=60)
@given(
    expression=valid_leaning_cron,
    timezone=st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe"]),
    after=moments,
)
def test_next_cron_fire_times_keep_increasing_across_daylight_saving(expression, timezone, after):
    trigger = _valid_trigger(expression, timezone)
    moment = after
    for _ in range(5):
        nxt = trigger.next_after(moment)
        if nxt is None:
            break
        assert nxt.utcoffset() == dt.timedelta(0)
        assert nxt > moment, f"{trigger}: {nxt} is not after {moment}"
        moment = nxt


@settings(FAST, max_examples=80)
@given(
    expression=valid_leaning_cron,
    timezone=st.sampled_from(["America/New_York", "Europe/Berlin", "Asia/Shanghai"]),
    after=st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1)),
)
def test_next_cron_fire_time_is_on_the_first_day_the_reference_matches(expression, timezone, after):
    from tests.test_cron_syntax import reference_day

    trigger = _valid_trigger(expression, timezone)
    moment = after.replace(tzinfo=trigger.tz)
    nxt = trigger.next_after(moment)
    if nxt is None:
        return
    day, last = moment.date() + dt.timedelta(days=1), nxt.astimezone(trigger.tz).date()
    assert reference_day(expression, last), (expression, last)
    while day < last and (day - moment.date()).days < 400:
        assert not reference_day(expression, day), (expression, day, last)
        day += dt.timedelta(days=1)


@FAST
@given(expression=valid_leaning_cron, locale=st.sampled_from(["en_US", "zh_CN"]))
def test_any_valid_cron_has_plain_words_in_both_languages(expression, locale):
    try:
        normalize_cron(expression)
    except ValueError:
        assume(False)
    assert describe_cron(expression, locale=locale)


# --- 2. job arguments ------------------------------------------------------------------------


def _has_nul(value) -> bool:
    """NUL characters are refused: PostgreSQL cannot store them."""
    return "\\u0000" in json.dumps(value)


def _numbers_as_floats(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    return [_numbers_as_floats(v) for v in value]


@pytest.mark.django_db
@DB
@given(args=json_values, kwargs=json_values)
def test_job_arguments_are_a_list_and_an_object_or_refused_whole(args, kwargs):
    with rolled_back():
        jobs_before, changes_before = Job.objects.count(), JobChange.objects.count()
        try:
            job = services.job_create(
                name="prop-args",
                task="demo.echo",
                trigger_type="cron",
                cron_expression="0 0 * * * *",
                args=args,
                kwargs=kwargs,
            )
        except ValidationError as exc:
            expected = {
                name
                for name, ok in (
                    ("args", isinstance(args, list) and not _has_nul(args)),
                    ("kwargs", isinstance(kwargs, dict) and not _has_nul(kwargs)),
                )
                if not ok
            }
            assert expected, f"valid arguments refused: {exc.message_dict}"
            assert set(exc.message_dict) == expected
            assert Job.objects.count() == jobs_before
            assert not Job.objects.filter(name="prop-args").exists()
            assert JobChange.objects.count() == changes_before
        else:
            assert isinstance(args, list) and isinstance(kwargs, dict)
            stored = Job.objects.get(pk=job.pk)
            # PostgreSQL's jsonb keeps numbers, not their Python type (6.5e16 comes back
            # as an int): compare numbers as numbers.
            assert _numbers_as_floats((stored.args, stored.kwargs)) == _numbers_as_floats(
                (args, kwargs)
            )


# --- 3. import files -------------------------------------------------------------------------

# Mostly valid choices: the mutations below supply the garbage.
TASK_IDS = ["existing", "nightly", "poll", "backup", "report", "daily", "hourly", "x" * 201]
TIMEZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Europe/Berlin", "Mars/Base"]
TASKS = ["demo.echo", "demo.echo", "demo.echo", "demo.fail", "os.system"]

aps_cron_value = st.one_of(
    st.integers(0, 23),
    st.sampled_from(["*", "*/2", "1,3", "1-5", "mon-fri", "0-6/2"]),
    st.one_of(st.integers(-2, 70), st.sampled_from(["5-2", "L", "last", "", "1 2"])),
)
cron_trigger = st.tuples(
    st.just("cron"),
    st.one_of(
        st.fixed_dictionaries(
            {
                "expression": st.integers(0, 3).flatmap(
                    lambda n: cron_like if n == 0 else valid_leaning_cron
                )
            }
        ),
        st.dictionaries(st.sampled_from(CRON_KEYS), aps_cron_value, min_size=1, max_size=4),
    ),
)
interval_trigger = st.tuples(
    st.just("interval"),
    st.one_of(
        st.dictionaries(
            st.sampled_from(["seconds", "minutes", "hours", "days", "weeks"]),
            st.integers(1, 10_000),
            min_size=1,
            max_size=1,
        ),
        st.dictionaries(
            st.sampled_from(["seconds", "minutes", "hours", "days", "weeks", "months"]),
            st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False)),
            min_size=1,
            max_size=2,
        ),
    ),
)
# Any year: 0001-01-01 local or 9999-12-31 local can fall outside the calendar in UTC.
run_dates = st.datetimes()
date_trigger = st.tuples(
    st.just("date"),
    st.fixed_dictionaries(
        {
            "run_date": st.one_of(
                run_dates.map(lambda d: d.isoformat(sep=" ")),
                st.datetimes(timezones=st.timezones()).map(dt.datetime.isoformat),
                st.text(max_size=25),
            )
        }
    ),
)
odd_trigger = st.tuples(
    st.one_of(st.sampled_from(["CRON", "weekly", ""]), json_values), json_values
)
option_values = {
    "group": st.text(max_size=30),
    "coalesce": st.booleans(),
    "max_instances": st.integers(1, 10),
    "misfire_grace_time": st.integers(1, 3600),
    "jitter": st.integers(0, 60),
    "soft_time_limit": st.none() | st.integers(1, 100),
    "time_limit": st.none() | st.integers(1, 1000),
    "max_retries": st.integers(0, 5),
    "retry_backoff": st.integers(0, 60),
    "retry_backoff_max": st.integers(0, 3600),
    "retry_jitter": st.booleans(),
    "retry_on": st.lists(st.sampled_from(["ConnectionError", "TimeoutError"]), max_size=2),
    "slow_threshold": st.none() | st.floats(0, 1e6),
    "alert_emails": st.sampled_from(["", "ops@example.com"]),
    "alert_webhooks": st.sampled_from(["", "https://example.com/hook"]),
    "alert_grace": st.integers(0, 3600),
    "queue": st.sampled_from(["", "reports", "bad queue"]),
    "priority": st.integers(0, 10),
    "exchange": st.sampled_from(["", "reports"]),
    "routing_key": st.sampled_from(["", "reports.daily"]),
}
plausible_fields = st.fixed_dictionaries(
    {"task_id": st.sampled_from(TASK_IDS), "task_func": st.sampled_from(TASKS)},
    optional={
        "task_name": st.text(max_size=30),
        "enabled": st.booleans(),
        "description": st.text(max_size=30),
        "timezone": st.sampled_from(TIMEZONES),
        "args": st.lists(json_values, max_size=3),
        "kwargs": st.dictionaries(st.text(max_size=10), json_values, max_size=3),
        "options": st.fixed_dictionaries({}, optional=option_values),
    },
)


def _with_trigger(fields: dict, trigger: tuple) -> dict:
    return {**fields, "trigger_type": trigger[0], "trigger_args": trigger[1]}


# A job entry that is valid more often than not.
plausible_entry = st.builds(
    _with_trigger, plausible_fields, st.one_of(cron_trigger, interval_trigger, date_trigger)
)
DROP = object()


def _replacement(key: str) -> st.SearchStrategy:
    return st.tuples(st.just(key), st.one_of(json_values, st.just(DROP)))


def _mutate(entry_and_changes: tuple[dict, list[tuple[str, object]]]) -> dict:
    entry, changes = entry_and_changes
    entry = dict(entry)
    for key, value in changes:
        if value is DROP:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


# A plausible entry (or one with an odd trigger) with up to two keys removed or given any
# JSON value (or an unknown key added), or any JSON value at all.
entries = st.one_of(
    st.tuples(
        st.one_of(plausible_entry, st.builds(_with_trigger, plausible_fields, odd_trigger)),
        st.lists(st.sampled_from([*sorted(ENTRY_KEYS), "extra"]).flatmap(_replacement), max_size=2),
    ).map(_mutate),
    json_values,
)
documents = st.one_of(
    st.lists(entries, max_size=3),
    st.fixed_dictionaries({"jobs": st.lists(entries, max_size=3)}),
    st.fixed_dictionaries({}, optional={"jobs": json_values, "executions": json_values}),
    json_values,
)


def _snapshot() -> list[dict]:
    return list(Job.objects.order_by("name").values())


def _entries_of(document) -> list[dict]:
    entries = document.get("jobs") if isinstance(document, dict) else document
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


@pytest.mark.django_db
@settings(DB, max_examples=150)
@given(document=documents)
def test_import_file_is_applied_whole_or_refused_naming_each_entry(document):
    with rolled_back():
        make_job(name="existing", cron_expression="0 0 * * * *", args=[1], kwargs={"a": 1})
        before, changes_before = _snapshot(), JobChange.objects.count()
        try:
            report = services.config_import(data=document)
        except ConfigError as exc:
            event("import refused")
            assert isinstance(exc.problems, list) and exc.problems
            for problem in exc.problems:
                assert isinstance(problem, str)
                assert problem.startswith(("jobs[", "the file")), problem
            assert _snapshot() == before
            assert JobChange.objects.count() == changes_before
        else:
            event("import applied")
            names = set(Job.objects.values_list("name", flat=True))
            assert {e["task_id"] for e in _entries_of(document)} <= names
            assert set(report.created) | set(report.updated) | set(report.unchanged) <= names


@pytest.mark.django_db
@settings(DB, max_examples=100)
@given(
    document=st.lists(
        plausible_entry, min_size=1, max_size=3, unique_by=lambda entry: entry["task_id"]
    )
)
def test_importing_the_same_file_twice_changes_nothing(document):
    with rolled_back():
        try:
            services.config_import(data=document)
        except ConfigError:
            event("import refused")
            return
        event("import applied")
        before, changes_before = _snapshot(), JobChange.objects.count()
        again = services.config_import(data=document)
        assert (again.created, again.updated, again.removed) == ([], [], []), again.diff
        assert _snapshot() == before
        assert JobChange.objects.count() == changes_before


@pytest.mark.django_db
@settings(DB, max_examples=100)
@example(trigger_args={"hour": 2, "day_of_week": "5-2"})
@example(trigger_args={"hour": 2, "day_of_week": ""})
@given(
    trigger_args=st.dictionaries(
        st.sampled_from(CRON_KEYS),
        st.one_of(
            st.integers(0, 59),
            st.text(alphabet="0123456789*/-, LW#", max_size=6),
            st.sampled_from(["mon-fri", "sat,sun", "jan", "last"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_apscheduler_cron_fields_keep_their_place_or_are_refused(trigger_args):
    entry = {
        "task_id": "aps",
        "task_func": "demo.echo",
        "trigger_type": "cron",
        "trigger_args": trigger_args,
    }
    try:
        (spec,) = config_parse([entry])
    except ConfigError:
        return
    fields = spec.fields["cron_expression"].split()
    for index, key in enumerate(("second", "minute", "hour")):
        value = trigger_args.get(key)
        if isinstance(value, int) and value < (60 if key != "hour" else 24):
            assert fields[index] == str(value), (trigger_args, spec.fields["cron_expression"])


# --- import problems the properties above found, as fixed examples --------------------------

ENTRY = {"task_id": "a", "task_func": "demo.echo", "trigger_type": "interval"}
EVERY_MINUTE = {**ENTRY, "trigger_args": {"minutes": 1}}
ON_A_DATE = {**ENTRY, "trigger_type": "date", "trigger_args": {"run_date": "2099-01-01 00:00:00"}}


def _assert_refused_naming_the_entry(document) -> None:
    with pytest.raises(ConfigError) as refused:
        services.config_import(data=document)
    assert all(p.startswith("jobs[0]") for p in refused.value.problems)
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("timezone", [["UTC"], {"a": 0}])
def test_import_refuses_a_timezone_that_is_not_a_string(timezone):
    _assert_refused_naming_the_entry([{**ON_A_DATE, "timezone": timezone}])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "entry",
    [
        {**EVERY_MINUTE, "description": None},
        {**EVERY_MINUTE, "task_name": None},
        {**EVERY_MINUTE, "options": {"alert_emails": None}},
        {**EVERY_MINUTE, "options": {"alert_webhooks": None}},
    ],
)
def test_import_refuses_null_for_a_text_field(entry):
    _assert_refused_naming_the_entry([entry])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "entry",
    [
        {**ENTRY, "trigger_type": "date", "trigger_args": {"run_date": "0001-01-01 00:00:00"}},
        {
            **ENTRY,
            "trigger_type": "date",
            "timezone": "America/New_York",
            "trigger_args": {"run_date": "9999-12-31 23:59:59"},
        },
    ],
)
def test_import_of_a_date_at_the_edge_of_the_calendar(entry):
    _assert_refused_naming_the_entry([entry])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "entry",
    [
        {**EVERY_MINUTE, "description": []},
        {**EVERY_MINUTE, "task_name": 5},
        {**EVERY_MINUTE, "options": {"max_instances": "5"}},
        {**EVERY_MINUTE, "options": {"retry_backoff": 1.5}},
    ],
)
def test_values_the_model_would_convert_are_refused(entry):
    # Converted silently, they would make every re-import report the job as updated.
    _assert_refused_naming_the_entry([entry])


@pytest.mark.django_db
def test_reimport_of_a_local_time_that_occurs_twice_changes_nothing():
    entry = {
        **ON_A_DATE,
        "timezone": "America/New_York",
        "trigger_args": {"run_date": "2099-11-01 01:30:00"},
    }
    services.config_import(data=[entry])
    again = services.config_import(data=[entry])
    assert again.unchanged == ["a"], again.diff


# --- 4. the admin form -----------------------------------------------------------------------

ADMIN_FIELDS = [
    "name",
    "cron_expression",
    "args",
    "kwargs",
    "timezone",
    "interval_every",
    "max_instances",
    "misfire_grace_time",
    "run_at_0",
    "run_at_1",
    "retry_on",
]
field_text = st.one_of(
    st.text(),
    st.text(alphabet="0123456789-+.eE :", max_size=25),
    st.sampled_from(["[]", "{}", "null", "[1, 2", '{"a": 1}', "99999999999999999999", "-1"]),
    cron_like,
)


def _post_a_new_job(client, **overrides):
    before = Job.objects.count()
    response = client.post(reverse("admin:scheduling_job_add"), form_data(**overrides))
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 200:
        assert "errorlist" in response.content.decode()
        assert Job.objects.count() == before
    else:
        assert Job.objects.count() == before + 1


@pytest.mark.django_db
@DB
@given(field=st.sampled_from(ADMIN_FIELDS), value=field_text)
def test_admin_form_shows_errors_for_any_text_and_never_fails(admin_client, field, value):
    with rolled_back():
        _post_a_new_job(admin_client, **{field: value})


@pytest.mark.django_db
@settings(DB, max_examples=60)
@example(date=dt.date(1, 1, 1), time=dt.time(0, 0), timezone="Asia/Shanghai")
@example(date=dt.date(9999, 12, 31), time=dt.time(23, 59, 59), timezone="America/New_York")
@given(
    date=st.dates(),
    time=st.times(),
    timezone=st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York", "Pacific/Kiritimati"]),
)
def test_admin_form_run_at_anywhere_in_the_calendar_never_fails(admin_client, date, time, timezone):
    with rolled_back():
        _post_a_new_job(
            admin_client,
            timezone=timezone,
            run_at_0=date.isoformat(),
            run_at_1=time.isoformat(timespec="seconds"),
        )
