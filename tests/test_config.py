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


# --- job groups in the file ---------------------------------------------------------------

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core.exceptions import PermissionDenied  # noqa: E402

from scheduling import group_services  # noqa: E402
from scheduling.audit import audit_context  # noqa: E402
from scheduling.models import JobGroup  # noqa: E402

REPORTS = {
    "name": "reports",
    "max_instances": 2,
    "queue": "reports",
    "alert_emails": "ops@example.com\nlead@example.com",
    "alert_webhooks": "https://hooks.example.com/jobs",
}


def _with_groups(*groups):
    return {"jobs": copy.deepcopy(GOOD), "groups": list(groups)}


def test_groups_round_trip_export_wipe_import_restores_them_exactly():
    services.config_import(data=GOOD)
    make_job(name="own-pause", group="reports")
    services.job_pause(job=Job.objects.get(name="own-pause"), reason="broken on its own")
    group_services.group_update(name="reports", max_instances=2, queue="reports")
    JobGroup.objects.create(name="etl", alert_emails="etl@example.com")
    with audit_context(source="command", actor="alice"):
        group_services.group_pause(name="reports", reason="warehouse migration")
    first = selectors.config_export()
    [etl, reports] = first["groups"]
    assert etl == {
        "name": "etl",
        "max_instances": None,
        "queue": "",
        "alert_emails": "etl@example.com",
        "alert_webhooks": "",
        "paused": False,
    }
    assert reports["paused"] is True and reports["paused_by"] == "alice"
    assert reports["pause_reason"] == "warehouse migration"
    text = json.dumps(first, sort_keys=True)
    Job.objects.all().delete()
    JobGroup.objects.all().delete()
    services.config_import(data=json.loads(text))
    assert json.dumps(selectors.config_export(), sort_keys=True) == text
    group = JobGroup.objects.get(name="reports")
    assert (group.max_instances, group.queue, group.paused_by) == (2, "reports", "alice")
    assert group.paused_at.isoformat() == reports["paused_at"]
    # The group's resume still finds the jobs its pause holds, and only those.
    resumed = group_services.group_resume(name="reports")
    assert [job.name for job in resumed] == ["nightly"]
    assert Job.objects.get(name="own-pause").pause_reason == "broken on its own"


def test_a_file_without_groups_leaves_them_and_a_file_of_jobs_alone_exports_as_before():
    services.config_import(data=GOOD)
    assert "groups" not in selectors.config_export()
    JobGroup.objects.create(name="reports", queue="reports")
    services.config_import(data=GOOD)
    assert JobGroup.objects.get(name="reports").queue == "reports"


def test_import_sets_group_settings_with_a_diff_and_dry_run_writes_nothing():
    services.config_import(data=GOOD)
    dry = services.config_import(data=_with_groups(REPORTS), dry_run=True)
    assert "+ group reports" in dry.diff
    assert not JobGroup.objects.exists()
    services.config_import(data=_with_groups(REPORTS))
    group = JobGroup.objects.get(name="reports")
    assert (group.max_instances, group.queue) == (2, "reports")
    assert group.alert_recipients == (
        ["ops@example.com", "lead@example.com"],
        ["https://hooks.example.com/jobs"],
    )
    again = services.config_import(data=_with_groups(REPORTS))
    assert not [line for line in again.diff if "group" in line]
    changed = {**REPORTS, "max_instances": 3}
    del changed["queue"]  # left out: the default (no queue of its own)
    report = services.config_import(data=_with_groups(changed), dry_run=True)
    assert "~ group reports: max_instances: 2 -> 3" in report.diff
    assert "~ group reports: queue: 'reports' -> ''" in report.diff
    assert JobGroup.objects.get(name="reports").max_instances == 2


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"max_instance": 2}, "groups[0] (reports): unknown key 'max_instance'"),
        ({"max_instances": 0}, "groups[0] (reports): max_instances: "),
        ({"max_instances": "2"}, "groups[0] (reports): max_instances: must be a whole number"),
        ({"queue": "bad queue!"}, "groups[0] (reports): queue: "),
        ({"alert_webhooks": "http://127.0.0.1/x"}, "groups[0] (reports): alert_webhooks: "),
        ({"alert_emails": 5}, "groups[0] (reports): alert_emails: must be a string"),
        ({"paused": "yes"}, "groups[0] (reports): paused: must be true or false"),
        ({"pause_reason": "why"}, "groups[0] (reports): pause_reason: needs 'paused': true"),
        (
            {"paused": True, "pause_reason": "x" * 301},
            "groups[0] (reports): pause_reason: The pause reason is 301 characters",
        ),
        (
            {"paused": True, "paused_at": "2026-12-01 10:00"},
            "groups[0] (reports): paused_at: must be an ISO 8601 date-time with an offset",
        ),
        ({"name": ""}, "groups[0]: must be an object with a non-empty 'name'"),
    ],
)
def test_a_bad_group_is_named_with_its_field_and_nothing_is_written(change, problem):
    make_job(name="kept", group="reports", max_retries=0)
    bad = {**REPORTS, **change}
    data = {"jobs": [{**GOOD[1]}], "groups": [bad]}
    with pytest.raises(ConfigError) as caught:
        services.config_import(data=data)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert not JobGroup.objects.exists()
    assert not Job.objects.filter(name="poll").exists()


def test_a_group_named_twice_is_refused():
    with pytest.raises(ConfigError, match=r"groups\[1\] \(reports\): appears twice"):
        services.config_import(data=_with_groups(REPORTS, REPORTS))


def test_a_file_that_pauses_a_group_pauses_its_jobs_and_one_that_resumes_it_resumes_them():
    services.config_import(data=GOOD)
    paused = {**REPORTS, "paused": True, "pause_reason": "migration", "paused_by": "bob"}
    report = services.config_import(data=_with_groups(paused))
    assert "~ group reports: paused: 'migration' (1 job(s))" in report.diff
    nightly = Job.objects.get(name="nightly")
    assert not nightly.enabled
    assert nightly.pause_reason == "Group reports paused by bob: migration"
    # The same file again: the job stays paused (held by the group), nothing changes.
    again = services.config_import(data=_with_groups(paused))
    assert "nightly" in again.unchanged
    assert not Job.objects.get(name="nightly").enabled
    resumed = services.config_import(data=_with_groups(REPORTS))
    assert "~ group reports: resumed (1 job(s))" in resumed.diff
    assert Job.objects.get(name="nightly").enabled
    assert not JobGroup.objects.get(name="reports").paused


def test_a_job_the_file_enables_stays_paused_while_its_group_is_paused():
    services.config_import(data=GOOD)
    group_services.group_pause(name="reports", reason="migration")
    # An older file, without groups, says the job is enabled: the group's pause holds it.
    report = services.config_import(data=GOOD)
    nightly = Job.objects.get(name="nightly")
    assert not nightly.enabled
    assert nightly.pause_reason == JobGroup.objects.get(name="reports").job_pause_reason()
    assert any("stays paused: its group reports is paused" in line for line in report.diff)
    assert "nightly" in report.unchanged
    # A job paused on its own that the file enables is handed over to the group's pause.
    services.job_pause(job=nightly, reason="its own")
    services.config_import(data=GOOD)
    assert Job.objects.get(name="nightly").pause_reason.startswith("Group reports paused")
    # So the group's resume resumes it.
    group_services.group_resume(name="reports")
    assert Job.objects.get(name="nightly").enabled


def test_a_job_created_enabled_in_a_group_the_file_pauses_is_paused_with_it():
    paused = {**REPORTS, "paused": True, "pause_reason": "migration"}
    with audit_context(source="command", actor="carol"):
        report = services.config_import(data=_with_groups(paused))
    nightly = Job.objects.get(name="nightly")
    assert not nightly.enabled
    assert nightly.pause_reason == "Group reports paused by carol: migration"
    assert any(line.startswith("~ nightly: stays paused") for line in report.diff)
    assert Job.objects.get(name="poll").enabled  # another group


def test_importing_groups_needs_change_and_pause_permissions():
    services.config_import(data=GOOD)
    user = User.objects.create_user("dev", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    with pytest.raises(PermissionDenied, match=r"change_job.*group reports"):
        services.config_import(data=_with_groups(REPORTS), user=user)
    user.user_permissions.add(Permission.objects.get(codename="change_job"))
    user = User.objects.get(pk=user.pk)
    services.config_import(data=_with_groups(REPORTS), user=user)
    paused = {**REPORTS, "paused": True}
    with pytest.raises(PermissionDenied, match=r"pause_job.*group reports"):
        services.config_import(data=_with_groups(paused), user=user)
    assert not JobGroup.objects.get(name="reports").paused


def test_jobs_import_command_shows_the_groups_diff_and_names_a_bad_group(tmp_path):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(_with_groups({**REPORTS, "paused": True, "pause_reason": "m"})))
    out = io.StringIO()
    call_command("jobs", "import", str(path), "--dry-run", stdout=out)
    assert "+ group reports" in out.getvalue()
    assert "~ group reports: paused: 'm' (0 job(s))" in out.getvalue()
    assert "~ nightly: stays paused: its group reports is paused" in out.getvalue()
    assert not JobGroup.objects.exists() and not Job.objects.exists()
    path.write_text(json.dumps(_with_groups({**REPORTS, "max_instances": -1})))
    with pytest.raises(CommandError, match=r"groups\[0\] \(reports\): max_instances"):
        call_command("jobs", "import", str(path), stdout=io.StringIO())
    assert not Job.objects.exists()
