"""``manage.py jobs add|modify``: every option the admin form edits, by the model's names,
validated as everywhere; and ``jobs api-key create|list|revoke``."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from scheduling.config import job_to_entry
from scheduling.models import ApiKey, Job
from tests.factories import make_job

pytestmark = pytest.mark.django_db


def jobs(*args) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_every_option_of_the_import_has_a_command_option():
    from scheduling.management.commands.jobs import Command

    parser = Command().create_parser("manage.py", "jobs")
    sub = next(a for a in parser._actions if a.dest == "action")
    for action in ("add", "modify"):
        flags = {o for a in sub.choices[action]._actions for o in a.option_strings}
        missing = [f for f in Job.OPTION_FIELDS if "--" + f.replace("_", "-") not in flags]
        assert missing == [], action


def test_add_and_modify_set_the_options_they_lacked():
    jobs(
        "add", "nightly", "--task", "demo.echo", "--cron", "0 0 2 * * *",
        "--coalesce", "--jitter", "5", "--soft-time-limit", "30", "--time-limit", "60",
        "--max-retries", "2", "--retry-backoff", "3", "--retry-backoff-max", "30",
        "--no-retry-jitter", "--retry-on", '["ConnectionError"]', "--slow-threshold", "2.5",
        "--alert-emails", "ops@example.com", "--alert-grace", "120",
    )  # fmt: skip
    job = Job.objects.get(name="nightly")
    assert (job.coalesce, job.jitter, job.soft_time_limit, job.time_limit) == (True, 5, 30, 60)
    assert (job.max_retries, job.retry_backoff, job.retry_backoff_max) == (2, 3, 30)
    assert job.retry_jitter is False and job.retry_on == ["ConnectionError"]
    assert (job.slow_threshold, job.alert_emails, job.alert_grace) == (2.5, "ops@example.com", 120)
    jobs("modify", "nightly", "--no-coalesce", "--slow-threshold", "", "--soft-time-limit", "")
    job.refresh_from_db()
    assert (job.coalesce, job.slow_threshold, job.soft_time_limit) == (False, None, None)
    options = job_to_entry(job)["options"]
    assert options["time_limit"] == 60 and options["max_retries"] == 2  # the import's names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jitter", "soon"], "--jitter 'soon' is not a whole number"),
        (["--slow-threshold", "fast"], "--slow-threshold 'fast' is not a number"),
        (["--retry-on", "[oops"], "--retry-on is not valid JSON"),
        (["--retry-on", "[1]"], "retry_on: Retry on must be a JSON list of exception names"),
        (["--soft-time-limit", "60", "--time-limit", "30"], "time_limit: The hard time limit"),
        (["--alert-webhooks", "ftp://x"], "alert_webhooks"),
    ],
)
def test_bad_option_values_name_the_option_and_write_nothing(args, message):
    make_job(name="nightly")
    before = Job.objects.get(name="nightly").version
    with pytest.raises(CommandError, match=message.replace("[", r"\[")):
        jobs("modify", "nightly", *args)
    assert Job.objects.get(name="nightly").version == before


def test_api_key_create_prints_the_key_once_on_its_last_line_and_it_works():
    make_job(name="reports.daily")
    out = jobs(
        "api-key", "create", "--name", "ci", "--privileges", "read,run", "--jobs", "reports.*",
        "--expires", "30",
    )  # fmt: skip
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("sj_")
    key = ApiKey.objects.get(name="ci")
    assert raw not in (key.key_hash, key.salt) and key.privileges == ["read", "run"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/jobs/reports.daily/").status_code == 200
    listed = json.loads(jobs("api-key", "list", "--json"))
    assert [(k["name"], k["state"]) for k in listed] == [("ci", "active")]
    assert raw not in jobs("api-key", "list")
    jobs("api-key", "revoke", "ci")
    assert client.get("/api/v1/jobs/reports.daily/").status_code == 401
    assert json.loads(jobs("api-key", "list", "--json"))[0]["state"] == "revoked"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "k", "--privileges", "read,admin"], "privileges"),
        (["create", "--name", "k", "--privileges", "read", "--expires", "0"], "expires_at"),
        (["revoke", "nobody"], "No API key named 'nobody'"),
    ],
)
def test_api_key_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        jobs("api-key", *args)
    assert not ApiKey.objects.exists()


def test_api_key_with_user_needs_the_permission():
    from django.contrib.auth.models import User

    User.objects.create_user("bob")
    with pytest.raises(CommandError, match=r"scheduling\.add_apikey"):
        jobs("--user", "bob", "api-key", "create", "--name", "k", "--privileges", "read")
