"""Security: production settings, secrets masked everywhere, permissions on commands."""

import datetime as dt
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


def staff_with(django_user_model, *codenames, username="editor"):
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return django_user_model.objects.get(pk=user.pk)  # fresh permission cache


@pytest.mark.django_db
@pytest.mark.parametrize(
    "trigger",
    [
        {"cron_expression": "0 0 * * * *"},
        {"trigger_type": "interval", "interval_every": 5, "interval_period": "minutes"},
        {"trigger_type": "date", "run_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},
    ],
)
def test_a_view_only_user_sees_the_job_page_with_secrets_masked(client, django_user_model, trigger):
    job = make_job(kwargs={"db_password": "hunter2", "nested": {"token": "t-9"}, "n": 1}, **trigger)
    client.force_login(staff_with(django_user_model, "view_job"))
    page = client.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "hunter2" not in html and "t-9" not in html
    assert MASK in html and "db_password" in html


@pytest.mark.django_db
def test_the_import_diff_never_prints_a_secret(tmp_path):
    make_job(name="sync", kwargs={"password": "old-pw", "host": "a"})
    path = tmp_path / "jobs.json"
    document = selectors.config_export(include_secrets=True)
    document["jobs"][0]["kwargs"] = {"password": "new-pw", "host": "b"}
    path.write_text(json.dumps(document))
    for extra in ([], ["--json"]):
        out = io.StringIO()
        call_command("jobs", "import", str(path), "--dry-run", *extra, stdout=out)
        assert "kwargs" in out.getvalue()
        assert "old-pw" not in out.getvalue() and "new-pw" not in out.getvalue()
    report = services.config_import(data=document)
    assert "old-pw" not in json.dumps(report.as_dict()) and "new-pw" not in str(report.diff)


@pytest.mark.django_db
def test_exporting_secrets_needs_its_own_permission(django_user_model):
    make_job(name="vault", kwargs={"api_key": "k-42"})
    staff_with(django_user_model, "view_job", username="viewer")
    out = io.StringIO()
    call_command("jobs", "--user", "viewer", "export", stdout=out)
    assert "k-42" not in out.getvalue()
    with pytest.raises(CommandError, match=r"lacks the permission 'scheduling\.export_secrets'"):
        call_command("jobs", "--user", "viewer", "export", "--include-secrets", stdout=out)
    staff_with(django_user_model, "view_job", "export_secrets", username="keeper")
    out = io.StringIO()
    call_command("jobs", "--user", "keeper", "export", "--include-secrets", stdout=out)
    assert "k-42" in out.getvalue()


@pytest.mark.django_db
def test_a_kept_secret_needs_the_other_kwargs_unchanged_or_the_keep_permission(
    client, django_user_model
):
    from tests.test_admin import form_data

    job = make_job(name="pusher", kwargs={"token": "s3cret", "url": "https://ours.example"})
    url = reverse("admin:scheduling_job_change", args=[job.pk])

    def post(**kwargs):
        data = form_data(name="pusher", cron_expression="0 0 * * * *", kwargs=json.dumps(kwargs))
        return client.post(url, data)

    client.force_login(staff_with(django_user_model, "view_job", "change_job", "pause_job"))
    page = post(token=MASK, url="https://theirs.example")
    assert page.status_code == 200
    assert "token" in " ".join(page.context["adminform"].form.errors["kwargs"])
    job.refresh_from_db()
    assert job.kwargs == {"token": "s3cret", "url": "https://ours.example"}
    assert post(token=MASK, url="https://ours.example").status_code == 302  # unchanged: kept
    assert post(token="new", url="https://theirs.example").status_code == 302  # re-entered
    job.refresh_from_db()
    assert job.kwargs == {"token": "new", "url": "https://theirs.example"}

    client.force_login(
        staff_with(django_user_model, "change_job", "pause_job", "keep_secrets", username="lead")
    )
    assert post(token=MASK, url="https://ours.example").status_code == 302
    job.refresh_from_db()
    assert job.kwargs == {"token": "new", "url": "https://ours.example"}


@pytest.mark.django_db
def test_a_masked_import_keeps_a_secret_only_under_the_same_rule(tmp_path, django_user_model):
    make_job(name="pusher", kwargs={"token": "s3cret", "url": "https://ours.example"})
    document = selectors.config_export()
    document["jobs"][0]["kwargs"]["url"] = "https://theirs.example"
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(document))
    staff_with(django_user_model, "view_job", "change_job", username="importer")
    with pytest.raises(CommandError, match=r"kwargs: .*pusher.*token"):
        call_command("jobs", "--user", "importer", "import", str(path), stdout=io.StringIO())
    assert Job.objects.get(name="pusher").kwargs["url"] == "https://ours.example"
    staff_with(django_user_model, "view_job", "change_job", "keep_secrets", username="lead")
    call_command("jobs", "--user", "lead", "import", str(path), stdout=io.StringIO())
    assert Job.objects.get(name="pusher").kwargs == {
        "token": "s3cret",
        "url": "https://theirs.example",
    }


def _entry(name, **fields):
    return {
        "task_id": name,
        "task_func": "demo.echo",
        "trigger_type": "cron",
        "trigger_args": {"expression": "0 0 * * * *"},
        **fields,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("entries", "prune", "permission"),
    [
        ([_entry("kept"), _entry("brand-new")], False, "add_job"),
        ([_entry("kept", enabled=False)], False, "pause_job"),
        ([_entry("kept", description="edited")], False, "change_job"),
        ([], True, "delete_job"),
    ],
)
def test_import_given_a_user_needs_the_permission_for_each_part_before_writing(
    tmp_path, django_user_model, entries, prune, permission
):
    make_job(name="kept", cron_expression="0 0 * * * *")
    make_job(name="other", cron_expression="0 0 * * * *")
    entries = [_entry("kept")] if prune else [*entries, _entry("other")]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(entries))
    args = ["import", str(path), *(["--prune"] if prune else [])]
    everything = {"view_job", "add_job", "change_job", "delete_job", "pause_job"}
    staff_with(django_user_model, *(everything - {permission}), username="partial")
    before = list(Job.objects.order_by("name").values_list("name", "enabled", "description"))
    with pytest.raises(CommandError, match=rf"lacks the permission 'scheduling\.{permission}'"):
        call_command("jobs", "--user", "partial", *args, stdout=io.StringIO())
    assert list(Job.objects.order_by("name").values_list("name", "enabled", "description")) == (
        before
    )
    staff_with(django_user_model, *everything, username="full")
    call_command("jobs", "--user", "full", *args, stdout=io.StringIO())
    after = list(Job.objects.order_by("name").values_list("name", "enabled", "description"))
    assert after != before
