"""Security: production settings, secrets masked everywhere, permissions on commands."""

import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from scheduling import runs, selectors, services
from scheduling.masking import MASK
from scheduling.models import Job, JobChange, JobExecution
from tests.factories import make_job

ROOT = Path(__file__).resolve().parents[1]


def manage(*args, **env):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="jobs.example.com",
        VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_the_default_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "DJANGO_DEBUG": "0", "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_secrets_are_masked_in_the_admin_and_kept_on_save(admin_client):
    job = make_job(
        name="db-sync", kwargs={"db_password": "hunter2", "api_key": "k-123", "table": "t"}
    )
    url = reverse("admin:scheduling_job_change", args=[job.pk])
    page = admin_client.get(url).content.decode()
    assert "hunter2" not in page and "k-123" not in page
    assert MASK in page and "&quot;t&quot;" in page
    from tests.test_admin import form_data

    data = form_data(
        name="db-sync",
        cron_expression="0 0 * * * *",
        kwargs=json.dumps({"db_password": MASK, "api_key": MASK, "table": "u"}),
    )
    assert admin_client.post(url, data).status_code == 302
    job.refresh_from_db()
    assert job.kwargs == {"db_password": "hunter2", "api_key": "k-123", "table": "u"}


@pytest.mark.django_db
def test_secrets_are_masked_in_exports_status_and_audit_and_survive_a_masked_import():
    job = make_job(name="mailer", kwargs={"smtp_password": "pw", "to": "ops"})
    services.job_update(job=job, kwargs={"smtp_password": "pw2", "to": "ops"})
    exported = selectors.config_export()
    assert exported["jobs"][0]["kwargs"] == {"smtp_password": MASK, "to": "ops"}
    assert (
        selectors.config_export(include_secrets=True)["jobs"][0]["kwargs"]["smtp_password"] == "pw2"
    )
    assert selectors.job_status(job=job)["kwargs"]["smtp_password"] == MASK
    assert "pw" not in json.dumps(list(JobChange.objects.values_list("changes", flat=True)))
    services.config_import(data=exported)
    job.refresh_from_db()
    assert job.kwargs["smtp_password"] == "pw2"
    out = io.StringIO()
    call_command("jobs", "show", "mailer", "--json", stdout=out)
    assert "pw2" not in out.getvalue()


@pytest.mark.django_db
def test_secrets_are_masked_in_recorded_results():
    job = make_job(kwargs={"token": "t0ps3cret", "n": 1})
    value = runs.execution_run(
        job_id=job.pk, trigger="manual", scheduled_at=None, task_id="x", worker="w"
    )
    run = JobExecution.objects.get(job=job)
    assert "t0ps3cret" not in run.result and MASK in run.result
    assert value["kwargs"]["token"] == MASK  # what Celery's result store receives


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "permission"),
    [
        (["list"], "view_job"),
        (["pause", "guarded"], "pause_job"),
        (["resume", "guarded"], "pause_job"),
        (["remove", "guarded"], "delete_job"),
        (["run", "guarded"], "run_job"),
        (["add", "new", "--task", "demo.echo", "--every", "5"], "add_job"),
        (["modify", "guarded", "--every", "5"], "change_job"),
    ],
)
def test_commands_given_a_user_need_that_users_permission(django_user_model, args, permission):
    make_job(name="guarded")
    user = django_user_model.objects.create_user("operator", password="pw")
    with pytest.raises(CommandError, match=f"lacks the permission 'scheduling.{permission}'"):
        call_command("jobs", "--user", "operator", *args, stdout=io.StringIO())
    assert Job.objects.filter(name="guarded", enabled=True).exists()
    user.user_permissions.add(Permission.objects.get(codename=permission))
    call_command("jobs", "--user", "operator", *args, stdout=io.StringIO(), stderr=io.StringIO())
    if args[0] in ("pause", "modify", "remove"):
        change = JobChange.objects.filter(job_name="guarded").exclude(action="added").first()
        assert change.actor == "operator"


@pytest.mark.django_db
def test_unknown_user_is_refused():
    with pytest.raises(CommandError, match="No active user 'ghost'"):
        call_command("jobs", "--user", "ghost", "list", stdout=io.StringIO())
