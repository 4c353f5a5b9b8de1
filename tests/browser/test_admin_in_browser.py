"""The admin in a real browser (headless Chromium) against real beat and worker processes.

An operator logs in, writes a cron job with seconds while the form previews it live, is
refused a bad expression, saves a good one, runs it now, watches the run appear, pauses it
and opens the dashboard. Screenshots of the pages go to ``docs/screenshots/`` (or to
``$BROWSER_SCREENSHOT_DIR``).

Needs Chromium at ``/usr/bin/chromium`` (or ``$CHROMIUM_PATH``) and the ``playwright``
package; Playwright's own browser downloads are never used.
"""

import datetime as dt
import itertools
import os
import re
import time
from pathlib import Path

import pytest
from django.urls import reverse

from scheduling.models import Job, JobExecution
from tests.e2e.processes import wait_for
from tests.factories import make_job

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:
    pytest.skip(
        "browser tests need the playwright package (pip install playwright)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("BROWSER_SCREENSHOT_DIR") or ROOT / "docs" / "screenshots")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVERY_2_SECONDS = "*/2 * * * * *"
BAD_MINUTE = "0 61 * * * *"
LOCAL_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \S+$")


@pytest.fixture(scope="module")
def browser():
    """Chromium for this module's tests.

    Playwright's sync API marks an asyncio loop as running in this thread, so Django refuses
    every ORM call made here (the test's own, and the database flush after it) as if from
    async code. They are plain synchronous calls: allow them, while the browser is open.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()


@pytest.fixture
def page(browser):
    """A fresh English-speaking page; fails the test on any JavaScript error it sees."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: msg.type == "error" and errors.append(f"console: {msg.text} ({msg.location})"),
    )
    page.on(
        "response",
        lambda r: r.status >= 400 and errors.append(f"HTTP {r.status}: {r.request.method} {r.url}"),
    )
    yield page
    context.close()
    # A refused form answers 200, and the preview's 400 for a bad expression is expected.
    unexpected = [e for e in errors if not re.search(r"HTTP 400: GET .*/preview/\?", e)]
    unexpected = [e for e in unexpected if "the server responded with a status of 400" not in e]
    unexpected = [e for e in unexpected if "/favicon.ico" not in e]  # Chromium asks by itself
    assert unexpected == [], unexpected


@pytest.fixture
def operator(live_server, django_user_model):
    django_user_model.objects.create_superuser("operator", "operator@example.com", "s3cret-pw")
    return live_server


def url(live_server, name: str, *args) -> str:
    return live_server.url + reverse(name, args=args)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def log_in(page: Page, live_server) -> None:
    page.goto(url(live_server, "admin:index"))
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", "s3cret-pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("operator")
    expect(page.locator("#site-name")).to_have_text("Scheduled jobs")


def type_cron(page: Page, expression: str) -> None:
    """Type the expression key by key, as an operator would (the preview debounces)."""
    field = page.locator("#id_cron_expression")
    field.fill("")
    field.press_sequentially(expression, delay=15)


def expect_preview(page: Page, words: str) -> list[dt.datetime]:
    """The live preview shows ``words`` and five run times; returns them."""
    box = page.locator("#schedule-live-preview")
    expect(box.locator("p")).to_have_text(re.compile(re.escape(words)))
    expect(box.locator("ol > li")).to_have_count(5)
    runs = []
    for text in box.locator("ol > li").all_inner_texts():
        match = LOCAL_TIME.match(text.strip())
        assert match, f"not a run time: {text!r}"
        runs.append(dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
    return runs


def fill_new_job(page: Page, live_server, name: str) -> None:
    """Open "add job" and fill in a demo.echo cron job firing every 2 seconds."""
    page.goto(url(live_server, "admin:scheduling_job_add"))
    page.fill("#id_name", name)
    page.select_option("#id_task", "demo.echo")
    page.fill("#id_kwargs", '{"from": "browser"}')
    page.select_option("#id_trigger_type", "cron")
    type_cron(page, EVERY_2_SECONDS)
    expect_preview(page, "Every 2 seconds")


def job_row(page: Page, name: str):
    row = page.locator("#result_list tbody tr").filter(
        has=page.locator("th.field-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )
    expect(row).to_have_count(1)
    return row


def test_job_form_previews_cron_with_seconds_and_refuses_a_bad_minute(page, operator):
    log_in(page, operator)
    page.goto(url(operator, "admin:scheduling_job_add"))
    cron = page.locator("fieldset.trigger-cron")
    interval = page.locator("fieldset.trigger-interval")
    once = page.locator("fieldset.trigger-date")

    # Only the chosen trigger's fields are shown.
    page.select_option("#id_trigger_type", "interval")
    expect(interval).to_be_visible()
    expect(cron).to_be_hidden()
    expect(once).to_be_hidden()
    page.select_option("#id_trigger_type", "cron")
    expect(cron).to_be_visible()
    expect(interval).to_be_hidden()
    expect(once).to_be_hidden()

    page.fill("#id_name", "browser-form")
    page.select_option("#id_task", "demo.echo")
    type_cron(page, EVERY_2_SECONDS)
    runs = expect_preview(page, "Every 2 seconds (Asia/Shanghai)")
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(runs)}
    assert gaps == {2.0}, runs
    assert all(run.second % 2 == 0 for run in runs), runs
    screenshot(page, "job-form.png")

    # A bad minute: the preview says so as it is typed, and saving is refused.
    type_cron(page, BAD_MINUTE)
    box = page.locator("#schedule-live-preview")
    expect(box).to_contain_text("The minute field '61'")
    expect(box.locator("li")).to_have_count(0)
    page.click("input[name=_save]")
    expect(page.locator(".errornote")).to_be_visible()
    error = page.locator(".field-cron_expression .errorlist")
    expect(error).to_contain_text("The minute field '61' of '0 61 * * * *' is not valid.")
    expect(page.locator(".errorlist")).to_have_count(1)  # only that field is blamed
    assert not Job.objects.exists(), "a job with a bad cron expression was saved"
    # The refused form keeps what was typed, and still shows only the cron fields.
    expect(page.locator("#id_name")).to_have_value("browser-form")
    expect(page.locator("#id_cron_expression")).to_have_value(BAD_MINUTE)
    expect(cron).to_be_visible()
    expect(interval).to_be_hidden()

    # Corrected, it saves.
    type_cron(page, EVERY_2_SECONDS)
    expect_preview(page, "Every 2 seconds")
    page.click("input[name=_save]")
    expect(page).to_have_url(url(operator, "admin:scheduling_job_changelist"))
    expect(page.locator("ul.messagelist .success")).to_contain_text("browser-form")
    job = Job.objects.get()
    assert (job.name, job.task, job.cron_expression) == (
        "browser-form",
        "demo.echo",
        "*/2 * * * * *",
    )


def test_operator_runs_pauses_and_charts_a_job(page, operator, celery_processes):
    celery_processes.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the workers keep the check
    celery_processes.start_worker()
    celery_processes.start_beat()
    log_in(page, operator)
    name = "browser-echo"

    fill_new_job(page, operator, name)
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist .success")).to_contain_text(name)
    job = Job.objects.get(name=name)
    row = job_row(page, name)
    expect(row.locator("td.field-task")).to_have_text("demo.echo")
    expect(row.locator("td.field-trigger_words")).to_have_text("Every 2 seconds (Asia/Shanghai)")
    # The next run reads relative ("in 1 s"), to the second with its offset on hover.
    expect(row.locator("td.field-next_run time")).to_have_attribute(
        "title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00 · .* UTC$")
    )
    expect(row.locator("td.field-enabled img")).to_have_attribute("alt", "True")

    # Run now asks for this run's options first (all optional): send it as the job says.
    job_row(page, name).locator("input.action-select").check()
    page.select_option("select[name=action]", label="Run selected jobs now")
    page.click("button[name=index]")
    expect(page.locator("#run-now-form")).to_contain_text(name)
    screenshot(page, "run-now.png")
    page.click("input[name=apply]")
    expect(page.locator("ul.messagelist")).to_contain_text("1 run sent to the workers.")

    # The job's history: reload until the manual run is there and finished.
    job_row(page, name).locator("td.field-executions_link a").click()
    expect(page).to_have_url(re.compile(rf"/jobexecution/\?job__id__exact={job.pk}$"))
    manual = page.locator("#result_list tbody tr").filter(
        has=page.locator("td.field-trigger", has_text="Manual")
    )
    deadline = time.monotonic() + 60
    while not manual.filter(has=page.locator("td.field-status_badge", has_text="Success")).count():
        assert time.monotonic() < deadline, "no successful manual run listed after 60 s"
        celery_processes.check_alive()
        time.sleep(1)
        page.reload()
    expect(manual.first.locator("td.field-worker_s")).to_have_text("w1@e2e")
    expect(manual.first.locator("th.field-job_name_s")).to_have_text(name)
    # Beat fires it too: wait for a scheduled run so the screenshot and the pause mean something.
    wait_for(
        lambda: JobExecution.objects.filter(job=job, trigger="schedule", status="success").exists(),
        timeout=30,
        what="a scheduled run",
        processes=celery_processes,
    )
    page.reload()
    scheduled = page.locator("#result_list tbody tr").filter(
        has=page.locator("td.field-trigger", has_text="Schedule")
    )
    expect(scheduled.first).to_be_visible()
    screenshot(page, "executions.png")

    # Back on the list: the last run is shown; then pause the job.
    page.goto(url(operator, "admin:scheduling_job_changelist"))
    expect(job_row(page, name).locator("td.field-last_outcome .badge")).to_have_text("Success")
    screenshot(page, "job-list.png")
    # Pausing asks why and until when first.
    job_row(page, name).locator("input.action-select").check()
    page.select_option("select[name=action]", label="Pause selected jobs")
    page.click("button[name=index]")
    page.fill("input[name=reason]", "upstream down")
    screenshot(page, "pause.png")
    page.click("input[name=apply]")
    expect(page.locator("ul.messagelist")).to_contain_text("1 job paused.")
    paused_at = dt.datetime.now(dt.UTC)
    expect(job_row(page, name).locator("td.field-next_run")).to_have_text(
        "paused by operator: upstream down"
    )
    expect(job_row(page, name).locator("td.field-enabled img")).to_have_attribute("alt", "False")
    job.refresh_from_db()
    assert job.enabled is False

    # The dashboard, from the header link, while the pause has time to settle.
    page.click("#user-tools a:text-is('Dashboard')")
    expect(page).to_have_url(url(operator, "admin:scheduling_dashboard"))
    for section in ("slowest", "outcomes", "durations"):
        chart = page.locator(f"section#{section} svg.chart")
        expect(chart).to_have_count(1)
        expect(chart).to_be_visible()
    expect(page.locator("section#slowest svg.chart")).to_contain_text(name)
    expect(page.locator("section#durations h2")).to_contain_text(name)
    expect(page.locator("#job-stats")).to_be_visible()
    expect(page.locator("section#upcoming")).not_to_contain_text(name)  # paused: not upcoming
    screenshot(page, "dashboard.png")

    # No fire time after the pause was sent: checked once beat and the worker have shown,
    # with a job created after it, that they got 5 s past it (not after a sleep that a
    # loaded machine may outlast).
    witness = make_job(name="witness", cron_expression="*/1 * * * * *")
    wait_for(
        lambda: JobExecution.objects.filter(
            job=witness,
            status="success",
            scheduled_at__gt=witness.created_at + dt.timedelta(seconds=5),
        ).exists(),
        timeout=60,
        what="beat and the worker to get past the pause",
        processes=celery_processes,
    )
    late = JobExecution.objects.filter(job=job, trigger="schedule", scheduled_at__gt=paused_at)
    assert list(late.values_list("scheduled_at", flat=True)) == [], "a paused job kept running"
