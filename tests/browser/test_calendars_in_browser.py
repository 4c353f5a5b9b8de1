"""The calendar pages fit a 1366x768 screen: no sideways scrolling on the exclusion
calendar page (its exclusions inline) or on a job's page with its calendars."""

import pytest

from scheduling import calendar_services
from tests.browser.test_admin_in_browser import (  # noqa: F401 (fixtures)
    browser,
    log_in,
    operator,
    screenshot,
    url,
)
from tests.factories import make_job

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_calendar_pages_fit_a_1366_screen(browser, operator):  # noqa: F811
    calendar = calendar_services.calendar_add(
        name="holidays",
        rules=calendar_services.rules_parse(
            dates=["2026-12-25"], weekly=["MON 00:00-06:00"], ranges=["2027-02-11..2027-02-17"]
        ),
    )
    job = make_job(name="nightly", cron_expression="0 0 2 * * *")
    calendar_services.job_set_calendars(job=job, names=["holidays"])
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US")
    page = context.new_page()
    try:
        log_in(page, operator)
        for name, args, shot in (
            ("admin:scheduling_calendar_change", [calendar.pk], "calendar-change.png"),
            ("admin:scheduling_job_change", [job.pk], "job-change-calendars.png"),
            ("admin:scheduling_jobgroup_changelist", [], "job-groups.png"),
        ):
            page.goto(url(operator, name, *args))
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1366, (name, width)
            screenshot(page, shot)
        page.goto(url(operator, "admin:scheduling_job_change", job.pk))
        assert "holidays" in page.locator(".field-calendars").inner_text()
    finally:
        context.close()
