"""``manage.py jobs``: every action, JSON output and bad input."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from scheduling.models import Job
from tests.factories import make_finished_run, make_job, make_waiting

pytestmark = pytest.mark.django_db


def jobs(*args) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_add_each_trigger_type():
    jobs("add", "c", "--task", "demo.echo", "--cron", "*/10 * * * * *")
    jobs("add", "i", "--task", "demo.echo", "--every", "30", "--period", "seconds", "--args", "[1]")
    jobs("add", "d", "--task", "demo.echo", "--at", "2099-01-01 08:00:00", "--timezone", "UTC")
    jobs("add", "l", "--task", "demo.echo", "--delay", "60", "--kwargs", '{"x": 1}')
    found = {job.name: job for job in Job.objects.all()}
    assert found["c"].cron_expression == "*/10 * * * * *"
    assert (found["i"].interval_every, found["i"].interval_period, found["i"].args) == (
        30,
        "seconds",
        [1],
    )
    assert found["d"].run_at.isoformat() == "2099-01-01T08:00:00+00:00"
    assert found["l"].trigger_type == "date" and found["l"].kwargs == {"x": 1}


def test_list_and_show_as_table_and_json():
    make_job(name="listed", cron_expression="0 */5 * * * *")
    table = jobs("list")
    assert "listed" in table and "Every 5 minutes" in table
    rows = json.loads(jobs("list", "--json"))
    assert rows[0]["name"] == "listed" and rows[0]["next_run_time"]
    shown = json.loads(jobs("show", "listed", "--json"))
    assert len(shown["upcoming"]) == 5


def test_modify_pause_resume_remove():
    job = make_job(name="m")
    jobs("modify", "m", "--cron", "0 0 3 * * *", "--kwargs", '{"days": 7}')
    job.refresh_from_db()
    assert job.cron_expression == "0 0 3 * * *" and job.kwargs == {"days": 7}
    jobs("pause", "m")
    assert not Job.objects.get(name="m").enabled
    jobs("resume", str(job.pk))
    assert Job.objects.get(name="m").enabled
    jobs("remove", "m")
    assert not Job.objects.filter(name="m").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "No job with id or name 'nope'"),
        (["pause", "nope"], "No job with id or name 'nope'"),
        (
            ["add", "x", "--task", "demo.echo", "--cron", "0 0 25 * * *"],
            "cron_expression: The hour field '25'",
        ),
        (
            ["add", "x", "--task", "demo.echo", "--every", "5", "--args", "[1,"],
            "--args is not valid JSON",
        ),
        (
            ["add", "x", "--task", "demo.echo", "--every", "5", "--kwargs", "[1]"],
            "kwargs: Keyword arguments must be a JSON object",
        ),
        (["add", "x", "--task", "os.system", "--every", "5"], "Task 'os.system' is not registered"),
        (
            ["add", "x", "--task", "demo.echo", "--at", "tomorrow"],
            "--at 'tomorrow' is not a date-time",
        ),
        (
            ["add", "x", "--task", "demo.echo", "--delay", "-1"],
            "delay_seconds: The delay must not be negative",
        ),
        (["modify", "existing"], "nothing to change"),
        (["import", "/nonexistent.json"], "cannot read /nonexistent.json"),
    ],
)
def test_bad_input_is_a_one_line_error_and_nothing_is_written(args, message):
    make_job(name="existing")
    with pytest.raises(CommandError, match=None) as caught:
        jobs(*args)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(Job.objects.values_list("name", flat=True)) == ["existing"]


def test_bad_input_exits_non_zero_from_the_shell(transactional_db):
    import os
    import subprocess
    import sys

    from tests.e2e.processes import database_url

    result = subprocess.run(
        [sys.executable, "manage.py", "jobs", "add", "x", "--task", "demo.echo", "--cron", "bad"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url()},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: cron_expression: A cron expression has 6 fields (second minute hour "
        "day-of-month month day-of-week), 5 (without seconds), a 7th for the year and an 8th "
        "for the ISO week, or is a macro such as @daily; 'bad' has 1."
    )


def test_export_then_import_with_dry_run(tmp_path):
    make_job(name="one", cron_expression="0 0 1 * * *")
    path = tmp_path / "jobs.json"
    call_command("jobs", "export", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    document = json.loads(path.read_text())
    assert document["jobs"][0]["task_id"] == "one"
    document["jobs"][0]["trigger_args"] = {"expression": "0 0 5 * * *"}
    document["jobs"].append({**document["jobs"][0], "task_id": "two"})
    path.write_text(json.dumps(document))
    out = jobs("import", str(path), "--dry-run")
    assert "+ two" in out and "~ one: cron_expression" in out
    assert "Would create 1, update 1, unchanged 0, remove 0" in out
    assert list(Job.objects.values_list("name", flat=True)) == ["one"]
    report = json.loads(jobs("import", str(path), "--json"))
    assert (report["created"], report["updated"]) == (["two"], ["one"])


def test_malformed_import_file_is_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"task_id": "x",')
    with pytest.raises(CommandError, match="is not valid JSON"):
        jobs("import", str(path))
    path.write_text(
        '[{"task_id": "x", "task_func": "demo.echo", "trigger_type": "cron", '
        '"trigger_args": {"expression": "0 0 2 * * *"}}, {"task_id": "y"}]'
    )
    with pytest.raises(CommandError, match=r"jobs\[1\]: missing 'task_func'"):
        jobs("import", str(path))
    assert not Job.objects.exists()


def test_help_of_each_action_has_examples():
    from scheduling.management.commands.jobs import EXAMPLES, Command

    parser = Command().create_parser("manage.py", "jobs")
    subparsers = next(a for a in parser._actions if a.dest == "action").choices
    assert set(subparsers) == set(EXAMPLES)
    for name, sub in subparsers.items():
        assert "examples:" in sub.format_help(), name


def test_stats_and_slow_commands(settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "SLOW_THRESHOLD": 2}
    job = make_job(name="cmd-stats")
    make_finished_run(job, 3)
    out = io.StringIO()
    call_command("jobs", "stats", "cmd-stats", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["runs"] == 1
    out = io.StringIO()
    call_command("jobs", "slow", "--window", "week", stdout=out)
    assert "cmd-stats" in out.getvalue()


def test_stats_command_refuses_a_date_without_a_timezone():
    with pytest.raises(CommandError, match=r"since: .*timezone offset"):
        call_command("jobs", "stats", "--since", "2026-11-01", stdout=io.StringIO())


def test_cancel_a_run_from_the_console(django_user_model):
    import uuid

    from scheduling.models import JobExecution
    from tests.factories import make_running

    job = make_job()
    run = make_running(job, task_result_id=str(uuid.uuid4()))
    with pytest.raises(CommandError, match="No run with execution id 'x'"):
        jobs("cancel", "x")
    django_user_model.objects.create_user("eve", is_staff=True)
    with pytest.raises(CommandError, match=r"lacks the permission 'scheduling\.cancel_run'"):
        jobs("--user", "eve", "cancel", str(run.pk))
    output = json.loads(jobs("cancel", str(run.pk), "--reason", "stuck", "--json"))
    assert output["status"] == "cancelling" and output["reason"].endswith(": stuck")
    output = json.loads(jobs("cancel", str(run.pk), "--terminate", "--json"))
    assert output["status"] == "terminated"
    with pytest.raises(CommandError, match="is not running"):
        jobs("cancel", str(run.pk))
    assert JobExecution.objects.get(pk=run.pk).status == "terminated"


def test_overlap_policy_from_the_console_and_dropping_a_waiting_run():
    jobs("add", "buffered", "--task", "demo.echo", "--every", "5", "--overlap", "buffer_one")
    job = Job.objects.get(name="buffered")
    assert job.overlap == "buffer_one"
    jobs("modify", "buffered", "--overlap", "allow_all")
    assert json.loads(jobs("show", "buffered", "--json"))["overlap"] == "allow_all"
    jobs("modify", "buffered", "--overlap", "terminate_other")
    assert Job.objects.get(name="buffered").overlap == "terminate_other"

    waiting = make_waiting(job)
    shown = json.loads(jobs("show", "buffered", "--json"))
    assert [run["id"] for run in shown["waiting"]] == [waiting.pk]
    jobs("drop", str(waiting.pk), "--reason", "not today")
    waiting.refresh_from_db()
    assert waiting.status == "skipped" and waiting.reason.endswith(": not today")
    with pytest.raises(CommandError, match="only a run waiting for a free slot"):
        jobs("drop", str(waiting.pk))
    with pytest.raises(CommandError, match="No execution 999999"):
        jobs("drop", "999999")


@pytest.mark.django_db(transaction=True)
def test_run_wait_says_why_a_run_did_not_run(monkeypatch):
    from scheduling import runs, services
    from tests.factories import make_running

    def dispatch(*, job, trigger, scheduled_at, task_id, overlap=None, **_):
        runs.execution_run(
            job_id=job.pk,
            trigger=trigger,
            scheduled_at=scheduled_at,
            task_id=task_id,
            worker="w@test",
            overlap=overlap,
        )
        return task_id

    monkeypatch.setattr(services, "job_dispatch", dispatch)
    job = make_job(name="busy", task="demo.noop", max_instances=1, overlap="skip")
    make_running(job)
    out = io.StringIO()
    with pytest.raises(SystemExit):  # not a success: exit status 1
        call_command("jobs", "run", "busy", "--wait", "--timeout", "3", stdout=out)
    assert "busy: skipped" in out.getvalue() and "max instances is 1" in out.getvalue()
