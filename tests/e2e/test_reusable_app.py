"""The wheel is a reusable app: installed into a fresh ``django-admin startproject`` project
in a fresh venv, it migrates and runs a job of that project's own app end to end, with
real beat and worker processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.configs import EMBEDDED_ONLY

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), EMBEDDED_ONLY]

SETTINGS = """

# --- added for the scheduling app (README: "Add it to your project") ---
INSTALLED_APPS += ["django_celery_beat", "django_celery_results", "scheduling", "reports"]
DATABASES["default"]["OPTIONS"] = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
}
# The app's embedded broker (folders); a real project sets CELERY_BROKER_URL instead.
from scheduling.broker import filesystem_settings

globals().update(filesystem_settings(BASE_DIR / "broker"))
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_BEAT_SCHEDULER = "scheduling.scheduler:JobScheduler"
SCHEDULING = {"DEFAULT_TIMEZONE": "Europe/Paris"}
"""

CELERY = '''"""The project's Celery app (Celery's "First steps with Django")."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_proj.settings")
app = Celery("site_proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
'''

JOBS = '''"""This project's own job task."""

from pathlib import Path

from scheduling.registry import job_task


@job_task("reports.touch", description="Write a marker file")
def touch(path: str) -> dict:
    Path(path).write_text("ran")
    return {"wrote": path}
'''

#: Run in the new project's shell: each of the app's admin pages, as a logged-in superuser.
ADMIN_PAGES = """
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment
from django.urls import reverse
from scheduling.models import Job

setup_test_environment()
client = Client()
client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
job = Job.objects.get(name="touch")
for name, args in (
    ("admin:scheduling_job_changelist", []),
    ("admin:scheduling_job_change", [job.pk]),
    ("admin:scheduling_jobexecution_changelist", []),
    ("admin:scheduling_running", []),
    ("admin:scheduling_dashboard", []),
    ("admin:scheduling_jsi18n", []),
):
    print(name, client.get(reverse(name, args=args)).status_code)
"""


def run(*args, cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the repository's sources (nothing written here)."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("scheduling", "project"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "manage.py"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path / "dist"
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
        "-w", out, source, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = out.glob("scheduled_jobs-*.whl")
    return wheel


def test_the_wheel_installs_into_a_fresh_project_and_runs_a_job(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("project/", "tests/", "manage.py"))]
    for wanted in (
        "scheduling/migrations/0001_initial.py",
        "scheduling/templates/scheduling/dashboard.html",
        "scheduling/locale/zh_Hans/LC_MESSAGES/django.mo",
        "scheduling/management/commands/jobs.py",
    ):
        assert wanted in names
    assert any(n.startswith("scheduling/static/") for n in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)  # its own site-packages only
    bin_dir = venv / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    installed = run(bin_dir / "python", "-m", "pip", "list", "--format=json", cwd=tmp_path)
    installed_names = {p["name"].lower() for p in json.loads(installed)}
    assert "scheduled-jobs" in installed_names
    assert not {"flower", "honcho"} & installed_names  # the runner's extra, not installed

    site = tmp_path / "site"
    site.mkdir()
    run(bin_dir / "django-admin", "startproject", "site_proj", site, cwd=tmp_path)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "C_FORCE_ROOT": "1",
    }
    run(bin_dir / "python", "manage.py", "startapp", "reports", cwd=site, env=env)
    (site / "reports" / "jobs.py").write_text(JOBS)
    (site / "site_proj" / "celery.py").write_text(CELERY)
    (site / "site_proj" / "__init__.py").write_text(
        "from site_proj.celery import app as celery_app\n\n__all__ = ('celery_app',)\n"
    )
    with (site / "site_proj" / "settings.py").open("a") as settings:
        settings.write(textwrap.dedent(SETTINGS))
    run(bin_dir / "python", "manage.py", "migrate", "--noinput", cwd=site, env=env)
    run(bin_dir / "python", "manage.py", "check", cwd=site, env=env)

    marker = tmp_path / "marker.txt"
    added = run(
        bin_dir / "python", "manage.py", "jobs", "add", "touch", "--task", "reports.touch",
        "--cron", "*/2 * * * * *", "--kwargs", json.dumps({"path": str(marker)}), "--json",
        cwd=site, env=env,
    )  # fmt: skip
    assert json.loads(added)["timezone"] == "Europe/Paris"  # the project's SCHEDULING

    logs, procs = {}, {}
    for name, args in (
        ("worker", ["worker", "-l", "info", "-c", "1"]),
        ("beat", ["beat", "-l", "info"]),
    ):
        logs[name] = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed below
        procs[name] = subprocess.Popen(
            [bin_dir / "celery", "-A", "site_proj", *args],
            cwd=site,
            env=env,
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        history: list = []
        while time.monotonic() < deadline:
            out = run(
                bin_dir / "python", "manage.py", "jobs", "history", "touch", "--json",
                cwd=site, env=env,
            )  # fmt: skip
            history = [row for row in json.loads(out) if row["status"] == "success"]
            if history:
                break
            time.sleep(1)
        assert history, "\n".join(
            f"--- {name}\n{(tmp_path / f'{name}.log').read_text()[-3000:]}" for name in procs
        )
        assert marker.read_text() == "ran"
        assert json.loads(history[0]["result"]) == {"wrote": str(marker)}
        assert history[0]["worker"]
        # The app's admin pages answer in that project, with its URLs (admin only).
        pages = run(
            bin_dir / "python", "manage.py", "shell", "-c", ADMIN_PAGES, cwd=site, env=env
        )  # fmt: skip
        assert pages.count(" 200") == 6, pages
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for log in logs.values():
            log.close()
