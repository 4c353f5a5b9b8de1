"""Config export and import: the guide's shape, validated whole, atomic and idempotent."""

import copy
import json

import pytest

from scheduling import selectors, services
from scheduling.config import DEFAULT_JOBS, ConfigError, config_parse, cron_from_trigger_args
from scheduling.models import InstalledDefault, Job
from tests.factories import make_job

pytestmark = pytest.mark.django_db

GOOD = [
    {
        "task_id": "nightly",
        "task_name": "Nightly report",
        "task_func": "demo.echo",
        "trigger_type": "cron",
        "trigger_args": {"expression": "0 0 2 * * *"},
        "enabled": True,
        "description": "Report every night",
        "timezone": "Europe/Berlin",
        "args": ["a"],
        "kwargs": {"days": 7},
        "options": {"group": "reports", "max_instances": 1, "misfire_grace_time": 60},
    },
    {
        "task_id": "poll",
        "task_func": "demo.echo",
        "trigger_type": "interval",
        "trigger_args": {"seconds": 45},
    },
    {
        "task_id": "year_end",
        "task_func": "demo.echo",
        "trigger_type": "date",
        "trigger_args": {"run_date": "2099-12-31 23:59:59"},
    },
]


def test_import_creates_jobs_then_the_same_file_changes_nothing():
    first = services.config_import(data=GOOD)
    assert first.created == ["nightly", "poll", "year_end"]
    nightly = Job.objects.get(name="nightly")
    assert (nightly.title, nightly.group, nightly.max_instances) == ("Nightly report", "reports", 1)
    assert nightly.kwargs == {"days": 7} and nightly.timezone == "Europe/Berlin"
    year_end = Job.objects.get(name="year_end")
    assert year_end.run_at.isoformat() == "2099-12-31T15:59:59+00:00"  # 23:59:59 in Asia/Shanghai
    versions = dict(Job.objects.values_list("name", "version"))

    second = services.config_import(data=GOOD)
    assert (second.created, second.updated, second.unchanged) == (
        [],
        [],
        ["nightly", "poll", "year_end"],
    )
    assert dict(Job.objects.values_list("name", "version")) == versions


def test_import_reports_updates_with_a_diff_and_dry_run_writes_nothing():
    services.config_import(data=GOOD)
    changed = copy.deepcopy(GOOD)
    changed[0]["trigger_args"] = {"expression": "0 30 2 * * *"}
    dry = services.config_import(data=changed, dry_run=True)
    assert dry.updated == ["nightly"]
    assert "~ nightly: cron_expression: '0 0 2 * * *' -> '0 30 2 * * *'" in dry.diff
    assert Job.objects.get(name="nightly").cron_expression == "0 0 2 * * *"
    services.config_import(data=changed)
    assert Job.objects.get(name="nightly").cron_expression == "0 30 2 * * *"


def test_prune_removes_only_when_asked():
    make_job(name="not-in-file")
    services.config_import(data=GOOD)
    assert Job.objects.filter(name="not-in-file").exists()
    report = services.config_import(data=GOOD, prune=True)
    assert report.removed == ["not-in-file"]
    assert not Job.objects.filter(name="not-in-file").exists()


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d[1].pop("task_func"), "jobs[1]: missing 'task_func'"),
        (lambda d: d[1].update(colour="red"), "jobs[1]: unknown key 'colour'"),
        (
            lambda d: d[0].update(trigger_args={"expression": "0 0 25 * * *"}),
            "jobs[0] (nightly): trigger_args: The hour field '25'",
        ),
        (
            lambda d: d[0].update(task_func="os.system"),
            "jobs[0] (nightly): task: Task 'os.system' is not registered",
        ),
        (
            lambda d: d[1].update(trigger_args={"seconds": 0}),
            "jobs[1] (poll): trigger_args: give exactly one of",
        ),
        (
            lambda d: d[2].update(trigger_args={"run_date": "soon"}),
            "run_date 'soon' is not a date-time",
        ),
        (
            lambda d: d[0].update(args={"a": 1}),
            "jobs[0] (nightly): args: Positional arguments must be a JSON list",
        ),
        (lambda d: d[0].update(trigger_type="weekly"), "trigger_type 'weekly' is not one of"),
        (lambda d: d[0]["options"].update(retries=3), "unknown option 'retries'"),
        (
            lambda d: d[0]["options"].update(overlap="sometimes"),
            "jobs[0] (nightly): overlap: Value 'sometimes' is not a valid choice.",
        ),
        (lambda d: d[1].update(task_id="nightly"), "task_id 'nightly' appears twice"),
        (lambda d: d.append("oops"), "jobs[3]: must be a JSON object"),
    ],
)
def test_a_bad_entry_is_named_and_nothing_is_written(mutate, problem):
    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        services.config_import(data=data)
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert not Job.objects.exists()


def test_a_file_that_is_not_a_job_list_is_refused():
    with pytest.raises(ConfigError, match="must be a list of jobs"):
        config_parse({"jobs": "everything"})


def test_export_import_export_round_trip_gives_the_same_file():
    services.config_import(data=GOOD)
    make_job(name="made-in-admin", cron_expression="*/5 * * * * *", timezone="UTC")
    first = json.dumps(selectors.config_export(), sort_keys=True)
    Job.objects.all().delete()
    services.config_import(data=json.loads(first))
    assert json.dumps(selectors.config_export(), sort_keys=True) == first


def test_guide_style_cron_fields_follow_apscheduler_rules():
    assert cron_from_trigger_args({"hour": 2, "minute": 0}) == "0 0 2 * * *"
    assert cron_from_trigger_args({"minute": "*/5"}) == "0 */5 * * * *"
    # APScheduler counts weekdays from Monday = 0.
    assert cron_from_trigger_args({"day_of_week": 0, "hour": 9}) == "0 0 9 * * 1"
    assert cron_from_trigger_args({"day_of_week": "5-6", "hour": 9}) == "0 0 9 * * 6,0"
    assert cron_from_trigger_args({"day_of_week": "mon-fri", "hour": 9}) == "0 0 9 * * mon-fri"


def test_default_jobs_are_installed_once_and_never_overwrite_edits():
    assert services.defaults_install() == ["daily_cleanup", "health_check", "data_backup"]
    cleanup = Job.objects.get(name="daily_cleanup")
    assert cleanup.cron_expression == "0 0 2 * * *" and cleanup.task == "maintenance.cleanup"
    assert Job.objects.get(name="health_check").interval_every == 30
    services.job_reschedule(job=cleanup, cron_expression="0 0 4 * * *")
    Job.objects.get(name="data_backup").delete()
    assert services.defaults_install() == []
    assert Job.objects.get(name="daily_cleanup").cron_expression == "0 0 4 * * *"
    assert not Job.objects.filter(name="data_backup").exists()
    assert InstalledDefault.objects.count() == len(DEFAULT_JOBS)


@pytest.mark.parametrize(
    ("trigger_args", "expression"),
    [
        ({"day": "last fri", "hour": 18}, "0 0 18 ? * 5L"),
        ({"day": "3rd fri", "hour": 9}, "0 0 9 ? * 5#3"),
        ({"day": "1st mon"}, "0 0 0 ? * 1#1"),
        ({"day": "5th sun"}, "0 0 0 ? * 0#5"),
        ({"day": "last"}, "0 0 0 L * *"),
        ({"day": "1,last"}, "0 0 0 1,L * *"),
        ({"day": "1, last fri"}, "0 0 0 1 * 5L"),  # either, as in APScheduler's list
        ({"day": "2nd tue,4th tue", "month": "*"}, "0 0 0 ? * 2#2,2#4"),
        ({"week": 10, "day_of_week": "mon", "hour": 9}, "0 0 9 * * mon * 10"),
        ({"week": "1-2"}, "0 0 0 * * * * 1-2"),
        ({"year": 2028}, "0 0 0 1 1 * 2028"),
        ({"year": "2027-2029", "month": 3, "day": "last"}, "0 0 0 L 3 * 2027-2029"),
    ],
)
def test_apscheduler_day_expressions_year_and_week(trigger_args, expression):
    assert cron_from_trigger_args(trigger_args) == expression


def test_apscheduler_fills_the_fields_after_the_last_given_with_their_minimum():
    # APScheduler: month=6 alone is June 1st at midnight, not every day of June.
    assert cron_from_trigger_args({"month": 6}) == "0 0 0 1 6 *"
    assert cron_from_trigger_args({"month": 6, "hour": 3}) == "0 0 3 * 6 *"


def test_apscheduler_day_of_week_numbers_and_steps_count_from_monday():
    # APScheduler's */2 is Mon, Wed, Fri, Sun; cron's */2 would be Sun, Tue, Thu, Sat.
    assert cron_from_trigger_args({"day_of_week": "*/2"}) == "0 0 0 * * 1,3,5,0"
    assert cron_from_trigger_args({"day_of_week": "0-4/2"}) == "0 0 0 * * 1,3,5"


@pytest.mark.parametrize(
    ("trigger_args", "message"),
    [
        ({"day": 1, "day_of_week": "mon"}, "match both 'day' and 'day_of_week'"),
        ({"day": "last fri", "day_of_week": "mon-fri"}, "match both"),
        ({"day": "last foo"}, "'foo' is not a weekday name"),
        ({"day": "6th fri"}, "'6th fri' is not a day"),
        ({"day": "32"}, "day of month field '32'"),
        ({"week": 54}, "week field '54'"),
        ({"year": 1969}, "year field '1969'"),
        ({"day_of_week": "fri-mon"}, "empty range"),
        ({"day_of_week": "7"}, "is not 0-6"),
    ],
)
def test_apscheduler_fields_cron_cannot_mean_are_refused(trigger_args, message):
    with pytest.raises(ValueError, match=message):
        cron_from_trigger_args(trigger_args)


@pytest.mark.django_db
def test_import_of_a_last_friday_job_previews_its_runs():
    (spec,) = config_parse(
        [
            {
                "task_id": "month_end",
                "task_func": "demo.echo",
                "trigger_type": "cron",
                "trigger_args": {"day": "last fri", "hour": 18},
                "timezone": "Asia/Shanghai",
            }
        ]
    )
    assert spec.fields["cron_expression"] == "0 0 18 ? * 5L"


def test_the_overlap_policy_is_exported_and_imported_skip_when_left_out():
    services.config_import(data=copy.deepcopy(GOOD))
    assert Job.objects.get(name="poll").overlap == "skip"
    job = Job.objects.get(name="poll")
    services.job_update(job=job, overlap="buffer_all")
    exported = selectors.config_export()
    [entry] = [e for e in exported["jobs"] if e["task_id"] == "poll"]
    assert entry["options"]["overlap"] == "buffer_all"
    Job.objects.all().delete()
    services.config_import(data=exported)
    assert Job.objects.get(name="poll").overlap == "buffer_all"
