"""The operator's console in a real browser (headless Chromium): every page fits a 1366x768
laptop screen and a 1920x1080 one, in English and in Chinese, with times to the second, and
the running-now page follows a real run on a real worker without a reload.

"Fits" means no horizontal scrolling: neither the document nor any table inside its box
(Django's change list scrolls its table inside ``.results`` rather than widening the page).
Screenshots of each page go to ``docs/screenshots/`` (or ``$BROWSER_SCREENSHOT_DIR``).
"""

import datetime as dt
import re

import pytest
from django.utils import timezone, translation

from scheduling import display, runs, services
from scheduling.models import JobExecution
from scheduling.runs.rules import Missed
from tests.browser.test_admin_in_browser import (  # noqa: F401 (fixtures)
    CHROMIUM,
    browser,
    log_in,
    operator,
    screenshot,
    url,
)
from tests.e2e.processes import wait_for
from tests.factories import make_finished_run, make_job, make_running

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SCREENS = {"1366": (1366, 768), "1920": (1920, 1080)}
LANGUAGES = {"en": ("en-US", "en"), "zh": ("zh-CN", "zh-Hans")}
SECONDS = re.compile(r"\d\d:\d\d:\d\d [+-]\d\d:\d\d")
# A clock time as shown (not the minutes of a UTC offset such as +08:00).
CLOCK = re.compile(r"(?<![\d:+-])\d{1,2}:\d\d(?::\d\d)?(?![\d:])")
LONG = "nightly-warehouse-export-to-object-storage-eu-west-1"

# The page's text without the triggers in words ("At 08:30 on Monday" is no moment).
WORDS_JS = """() => {
  const copy = document.querySelector("#content").cloneNode(true);
  copy.querySelectorAll(".trigger, .field-trigger_words").forEach((e) => e.remove());
  return copy.innerText;
}"""

# What scrolls sideways: the document, and every table's box (its parent element).
OVERFLOW_JS = """() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth) out.push(`document ${doc.scrollWidth} > ${doc.clientWidth}`);
  for (const table of document.querySelectorAll("table")) {
    if (!table.offsetParent) continue;  // hidden (a collapsed fieldset)
    const box = table.parentElement;
    if (box.scrollWidth > box.clientWidth + 1) {
      out.push(`table ${table.id || table.className || box.className}: ${box.scrollWidth} > ${box.clientWidth}`);
    }
    if (table.getBoundingClientRect().right > doc.clientWidth + 1) {
      out.push(`table ${table.id || table.className} ends at ${table.getBoundingClientRect().right}`);
    }
  }
  return out;
}"""


def open_page(browser, screen: str, language: str):  # noqa: F811
    """A page of the given size and language that records every JavaScript error."""
    width, height = SCREENS[screen]
    locale, accept = LANGUAGES[language]
    context = browser.new_context(
        viewport={"width": width, "height": height},
        locale=locale,
        extra_http_headers={"Accept-Language": accept},
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(f"uncaught: {exc}"))
    # A failed request is named by the response handler (with its URL; Chromium's own
    # favicon request apart), not by the console's copy of it.
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and "Failed to load resource" not in msg.text
            and page.js_errors.append(f"console: {msg.text}")
        ),
    )
    page.on(
        "response",
        lambda r: (
            r.status >= 400
            and "/favicon.ico" not in r.url
            and page.js_errors.append(f"HTTP {r.status}: {r.url}")
        ),
    )
    return page


def console_rows():
    """Jobs and runs as an operator's day leaves them: long names, every outcome, a paused
    job, a run in progress, an outage's summary of missed fire times."""
    jobs = [
        make_job(name=LONG, group="warehouse", description="Export " * 20),
        make_job(name="reports.daily-summary-for-the-board", cron_expression="0 30 8 * * 1-5"),
        make_job(
            name="every-two-seconds-heartbeat",
            cron_expression="*/2 * * * * *",
            timezone="America/New_York",
        ),
        make_job(
            name="interval-sync",
            trigger_type="interval",
            interval_every=10,
            interval_period="minutes",
        ),
    ]
    services.job_pause(job=jobs[1], reason="upstream data provider is down until further notice")
    for index in range(60):
        make_finished_run(
            jobs[index % 3],
            [0.004, 0.85, 2.4, 185][index % 4],
            ["success", "success", "failure", "timeout", "skipped"][index % 5],
            ago=dt.timedelta(minutes=7 * index),
        )
    failed = JobExecution.objects.filter(status="failure").first()
    failed.exception = "ConnectionError: the warehouse refused the connection " * 3
    failed.traceback = "Traceback (most recent call last):\n" + "  File ...\n" * 10
    failed.reason = "connection refused by warehouse.example.com:5432 " * 2
    failed.worker = "celery@worker-with-a-long-host-name.example.com"
    failed.save()
    run = make_running(
        jobs[0], started_at=timezone.now() - dt.timedelta(seconds=75), worker="w1@e2e"
    )
    JobExecution.objects.filter(pk=run.pk).update(
        progress=40, progress_message="rows 4000 of 10000"
    )
    job = jobs[3]
    before = job.next_run_at
    runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=before - dt.timedelta(hours=5), before=before))],
        reason="Not sent: beat was down.",
    )
    return jobs, failed


PAGES = {
    "jobs": lambda jobs, failed: ("admin:scheduling_job_changelist",),
    "executions": lambda jobs, failed: ("admin:scheduling_jobexecution_changelist",),
    "running": lambda jobs, failed: ("admin:scheduling_running",),
    "job": lambda jobs, failed: ("admin:scheduling_job_change", jobs[0].pk),
    "execution": lambda jobs, failed: ("admin:scheduling_jobexecution_change", failed.pk),
    "dashboard": lambda jobs, failed: ("admin:scheduling_dashboard",),
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("screen", SCREENS)
def test_every_console_page_fits_the_screen_with_times_to_the_second(
    browser,  # noqa: F811
    operator,  # noqa: F811
    screen,
    language,
):
    jobs, failed = console_rows()
    page = open_page(browser, screen, language)
    log_in_as_operator(page, operator)
    problems = {}
    for name, target in PAGES.items():
        page.goto(url(operator, *target(jobs, failed)))
        page.wait_for_load_state("load")
        overflow = page.evaluate(OVERFLOW_JS)
        if overflow:
            problems[name] = overflow
        hovers = [t.get_attribute("title") or "" for t in page.locator("time").all()]
        bad = [text for text in hovers if not SECONDS.search(text)]
        assert bad == [], f"{name}: times without seconds and offset on hover: {bad[:3]}"
        text = page.evaluate(WORDS_JS)
        clock = [m[0] for m in CLOCK.finditer(text)]
        assert clock or hovers or name == "running", f"{name}: no times shown"
        assert [c for c in clock if c.count(":") < 2] == [], f"{name}: a time to the minute"
        if screen == "1366" or language == "en":  # the large screen once is enough
            screenshot(page, f"console-{name}-{screen}-{language}.png")
    assert problems == {}, problems
    assert page.js_errors == [], page.js_errors
    page.context.close()


def log_in_as_operator(page, live_server):
    """Log in (the shared helper checks the English site name; the login form is the same)."""
    page.goto(url(live_server, "admin:login"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", "s3cret-pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def test_running_now_follows_a_real_run_without_a_reload_and_cancels_it(
    browser,  # noqa: F811
    operator,  # noqa: F811
    celery_processes,
):
    celery_processes.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the workers keep the check
    celery_processes.start_worker(env={"SCHEDULING_CANCEL_CHECK_INTERVAL": "0.5"})
    job = make_job(
        name="cooperative-in-browser", task="tests.cooperative", kwargs={"key": "browser"}
    )
    page = open_page(browser, "1366", "en")
    log_in_as_operator(page, operator)
    page.goto(url(operator, "admin:scheduling_running"))
    page.evaluate("window.notReloaded = true")
    rows = page.locator("#running-list tr.running-run")
    assert rows.count() == 0

    services.job_run_now(job=job)
    row = rows.filter(has_text=job.name)
    row.wait_for(timeout=60_000)
    progress = row.locator(".progress-text")
    first = progress.inner_text()
    elapsed = row.locator("td.elapsed").inner_text()
    assert row.locator("td.worker").inner_text() == "w1@e2e"
    page.wait_for_function(
        "([before, elapsed]) => { const r = document.querySelector('#running-list tr.running-run');"
        " return r && r.querySelector('.progress-text').textContent !== before"
        " && r.querySelector('td.elapsed').textContent !== elapsed; }",
        arg=[first, elapsed],
        timeout=20_000,
    )
    assert re.fullmatch(r"\d+% step \d+ of 600", progress.inner_text())
    assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
    screenshot(page, "console-running-live.png")

    row.locator("button[name=terminate][value='0']").click()  # Cancel
    run = JobExecution.objects.get(job=job)
    wait_for(
        lambda: JobExecution.objects.get(pk=run.pk).status == "cancelled",
        timeout=60,
        what="the run to stop after its cancel",
        processes=celery_processes,
    )
    page.locator("#running-list", has_text="No run in progress.").wait_for(timeout=20_000)
    assert page.js_errors == [], page.js_errors
    page.context.close()


# A live time within 50 minutes of now: shown to the second ("1 min 15 s ago"), its text
# changes every second.
RECENT_LIVE_TIME_JS = """() => {
  const now = Date.now();
  const element = [...document.querySelectorAll("time[data-live]")].find(
    (e) => Math.abs(Date.parse(e.getAttribute("datetime")) - now) < 3000000);
  return element ? [element.getAttribute("datetime"), element.textContent] : null;
}"""
# The span of seconds the script's words are checked at against scheduling.display's.
DELTAS = [0.3, 5, -5, 59.2, -61, 3599, -3600, 3725, -(2 * 86400 + 3 * 3600 + 5)]


@pytest.mark.parametrize("language", LANGUAGES)
def test_relative_times_stay_true_without_a_reload_in_both_languages(
    browser,  # noqa: F811
    operator,  # noqa: F811
    language,
):
    jobs, _ = console_rows()
    type(jobs[0]).objects.filter(pk=jobs[0].pk).update(
        last_run_at=timezone.now() - dt.timedelta(seconds=5), last_status="success"
    )
    page = open_page(browser, "1366", language)
    log_in_as_operator(page, operator)
    targets = {
        "jobs": ("admin:scheduling_job_changelist",),
        "executions": ("admin:scheduling_jobexecution_changelist",),
        "job": ("admin:scheduling_job_change", jobs[2].pk),  # every 2 s: next runs near
        "running": ("admin:scheduling_running",),
    }
    for name, target in targets.items():
        page.goto(url(operator, *target))
        page.wait_for_load_state("load")
        page.evaluate("window.notReloaded = true")
        found = page.evaluate(RECENT_LIVE_TIME_JS)
        assert found, f"{name}: no live time within 50 minutes of now"
        moment, before = found
        page.wait_for_function(
            "([moment, before]) => { const e = document.querySelector("
            "`time[data-live][datetime='${moment}']`); return e && e.textContent !== before; }",
            arg=[moment, before],
            timeout=5_000,
        )
        assert page.evaluate("window.notReloaded") is True, f"{name}: the page was reloaded"
        if language == "zh":
            assert re.search(r"[\u4e00-\u9fff]", before), f"{name}: {before!r} is not in Chinese"
    # The script's words are scheduling.display's, in the page's language.
    now = timezone.now()
    with translation.override(LANGUAGES[language][1]):
        expected = [display.relative(now + dt.timedelta(seconds=d), now) for d in DELTAS]
    shown = page.evaluate("(ds) => ds.map((d) => window.schedulingLiveTimes.relative(d))", DELTAS)
    assert shown == expected
    assert page.js_errors == [], page.js_errors
    page.context.close()


def test_the_dashboard_shows_times_in_the_timezone_the_operator_picks(
    browser,  # noqa: F811
    operator,  # noqa: F811
):
    console_rows()
    page = open_page(browser, "1366", "zh")
    log_in_as_operator(page, operator)
    page.goto(url(operator, "admin:scheduling_dashboard"))
    assert "Asia/Shanghai (+08:00)" in page.locator("#dashboard-zone").inner_text()
    page.select_option("#dashboard-zone-choice", "Asia/Kolkata")
    page.locator("#dashboard-filter input[type=submit]").click()
    page.wait_for_load_state("load")
    zone = page.locator("#dashboard-zone").inner_text()
    assert "Asia/Kolkata (+05:30)" in zone and zone.count("+05:30") == 3, zone
    page.goto(url(operator, "admin:scheduling_dashboard"))  # kept for the next visit
    assert "Asia/Kolkata (+05:30)" in page.locator("#dashboard-zone").inner_text()
    hovers = [t.get_attribute("title") for t in page.locator("#missed time").all()]
    assert hovers and all("+05:30" in h for h in hovers), hovers
    assert page.evaluate(OVERFLOW_JS) == []
    screenshot(page, "console-dashboard-zone-1366-zh.png")
    assert page.js_errors == [], page.js_errors
    page.context.close()
