"""``scripts/run --production``: gunicorn (DEBUG off, whitenoise), two beats, a worker per
queue and Flower behind authentication on PostgreSQL + Redis. Log in over HTTP with CSRF,
create a job and run it, then SIGTERM everything: all exit within 30 s, no run lost or
doubled."""

import base64
import contextlib
import http.cookiejar
import os
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from project.celery import app
from tests.e2e.test_run_command import Run, alive, descendants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


class FormFields(HTMLParser):
    """The fields of the page's forms as a browser would send them unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._selected: str | None = None
        self._first: str | None = None
        self._multiple = False
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in {"checkbox", "radio"}:
                if "checked" in a:
                    self.fields.append((name, a.get("value", "on")))
            elif kind not in {"submit", "button", "file", "image"}:
                self.fields.append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select, self._selected, self._first = name, None, None
            self._multiple = "multiple" in a
        elif tag == "option" and self._select:
            value = a.get("value", "")
            self._first = value if self._first is None else self._first
            if "selected" in a:
                self._selected = value
                if self._multiple:  # a browser sends each selected option, none if none
                    self.fields.append((self._select, value))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""

    def handle_data(self, data):
        if self._textarea:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "select" and self._select:
            if not self._multiple:
                chosen = self._selected if self._selected is not None else self._first
                self.fields.append((self._select, chosen or ""))
            self._select = None
        elif tag == "textarea" and self._textarea:
            self.fields.append((self._textarea, self._text.lstrip("\n")))
            self._textarea = None


class Browser:
    """Cookies, CSRF tokens and forms over plain HTTP."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str, str]:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.status, response.geturl(), response.read().decode()

    def post(self, path: str, fields: list[tuple[str, str]]) -> tuple[int, str, str]:
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        data = [(k, v) for k, v in fields if k != "csrfmiddlewaretoken"]
        data.append(("csrfmiddlewaretoken", token))
        request = urllib.request.Request(
            self.base + path,
            data=urllib.parse.urlencode(data).encode(),
            headers={"Referer": self.base + path},
        )
        with self.opener.open(request, timeout=30) as response:
            return response.status, response.geturl(), response.read().decode()

    def form(self, path: str) -> list[tuple[str, str]]:
        _status, _url, page = self.get(path)
        parser = FormFields()
        parser.feed(page)
        return parser.fields


@pytest.fixture
def production_database():
    """A database of its own for the run command's migrate (dropped afterwards)."""
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("the production topology runs on PostgreSQL + Redis")
    s = connection.settings_dict
    name = f"{s['NAME']}_production"
    admin = f"postgresql://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.rsplit("/", 1)[0].replace("postgresql", "postgres") + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_production_topology_serves_runs_and_stops_cleanly(tmp_path, production_database):
    run = Run(
        tmp_path / "var",
        args=("--production",),
        env={
            "DATABASE_URL": production_database,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "DJANGO_DEBUG": "0",
        },
    )
    try:
        run.wait_for("Listening at", timeout=180)  # gunicorn
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if sum("ready." in line for line in run.lines) >= 2:
                break
            time.sleep(0.5)
        assert sum("ready." in line for line in run.lines) >= 2, "\n".join(run.lines[-80:])
        run.wait_for("is now the leader", timeout=60)
        processes = descendants(run.proc.pid)

        browser = Browser(f"http://127.0.0.1:{run.env['WEB_PORT']}")
        # Static files come from whitenoise with DEBUG off (collected, hashed names).
        _s, _u, login_page = browser.get("/admin/login/")
        css = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', login_page)
        assert css and browser.get(css[1])[0] == 200
        fields = browser.form("/admin/login/?next=/admin/")
        fields = [(k, v) for k, v in fields if k not in {"username", "password"}]
        fields += [("username", "admin"), ("password", run.env["ADMIN_PASSWORD"])]
        _status, url, page = browser.post("/admin/login/?next=/admin/", fields)
        assert url.endswith("/admin/"), page[:2000]

        form = dict(browser.form("/admin/scheduling/job/add/"))
        form.update(
            name="every second",
            task="demo.echo",
            trigger_type="cron",
            cron_expression="* * * * * *",
            args="[]",
            kwargs="{}",
            _save="Save",
        )
        _status, url, page = browser.post("/admin/scheduling/job/add/", list(form.items()))
        assert url.endswith("/admin/scheduling/job/"), re.findall(
            r'<ul class="errorlist[^>]*>.*?</ul>', page, re.S
        )
        with psycopg.connect(production_database.replace("postgres://", "postgresql://")) as db:
            (job_id,) = db.execute(
                "SELECT id FROM scheduling_job WHERE name = 'every second'"
            ).fetchone()
        chosen = [("action", "run_jobs_now"), ("_selected_action", str(job_id)), ("index", "0")]
        _status, _url, page = browser.post("/admin/scheduling/job/", chosen)
        assert "Run now" in page  # the action asks for this run's options first
        _status, _url, page = browser.post("/admin/scheduling/job/", [*chosen, ("apply", "1")])
        assert "1 run sent to the workers." in page

        # Flower answers only with its password.
        flower = f"http://127.0.0.1:{run.env['FLOWER_PORT']}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(flower, timeout=10)
        assert refused.value.code == 401
        password = (tmp_path / "var" / "flower-password").read_text().strip()
        auth = base64.b64encode(f"admin:{password}".encode()).decode()
        request = urllib.request.Request(flower, headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        time.sleep(6)  # a few scheduled runs
        stopped_at = time.monotonic()
        os.killpg(run.proc.pid, signal.SIGTERM)  # as systemd stops a unit: every process
        while time.monotonic() - stopped_at < 40 and any(alive(p) for p in processes):
            time.sleep(0.2)
        elapsed = time.monotonic() - stopped_at
        print(f"every process exited {elapsed:.1f} s after SIGTERM")
        assert [p for p in processes if alive(p)] == [], "\n".join(run.lines[-60:])
        assert elapsed < 30, "\n".join(run.lines[-60:])
    finally:
        for pid in descendants(run.proc.pid) | {run.proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        app.control.purge()  # no message of this test's jobs for the next test's workers

    with psycopg.connect(production_database.replace("postgres://", "postgresql://")) as db:
        rows = db.execute(
            "SELECT trigger, scheduled_at, status FROM scheduling_jobexecution e "
            "JOIN scheduling_job j ON j.id = e.job_id WHERE j.name = 'every second' "
            "ORDER BY scheduled_at"
        ).fetchall()
    manual = [r for r in rows if r[0] == "manual"]
    scheduled = [r[1] for r in rows if r[0] == "schedule"]
    assert [r[2] for r in manual] == ["success"]
    assert len(scheduled) >= 3
    assert len(set(scheduled)) == len(scheduled)  # none doubled
    seconds = [int(moment.timestamp()) for moment in scheduled]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))  # none lost between
    assert {r[2] for r in rows} == {"success"}, rows  # none lost, none left running
