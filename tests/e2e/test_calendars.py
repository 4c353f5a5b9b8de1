"""Exclusion calendars with real processes: a beat and a worker skip the fire times a
calendar excludes across a daylight-saving change, and record them as one skipped row.

No real zone changes its clocks while a test runs, so the test writes one that does: a
TZif file (the format of the system's zone database) whose clocks spring forward an hour
about 45 seconds from now, found through ``PYTHONTZPATH`` by the test and both processes.
"""

import datetime as dt
import struct
import time
import zoneinfo

import pytest

from scheduling import calendar_services, schedules
from scheduling.models import JobExecution
from tests.e2e.configs import NOT_ON_AMQP
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e, NOT_ON_AMQP]

ZONE = "Test/SpringForward"


def tzif(transition: int, before: int, after: int) -> bytes:
    """A version-2 TZif file: UTC offset ``before`` seconds until ``transition`` (Unix
    time), ``after`` from then on (daylight saving)."""
    names = b"STD\x00DST\x00"

    def block(time_format: str) -> bytes:
        counts = struct.pack(">6l", 0, 0, 0, 1, 2, len(names))
        data = (
            struct.pack(time_format, transition)
            + b"\x01"
            + struct.pack(">lBB", before, 0, 0)
            + struct.pack(">lBB", after, 1, 4)
            + names
        )
        return b"TZif2" + b"\x00" * 15 + counts + data

    return block(">l") + block(">q") + b"\n\n"


@pytest.fixture
def spring_forward(tmp_path):
    """A zone whose clocks go from UTC+0 to UTC+1 at the returned moment (UTC)."""
    transition = int(time.time()) + 45
    zones = tmp_path / "zones"
    (zones / "Test").mkdir(parents=True)
    (zones / ZONE).write_bytes(tzif(transition, 0, 3600))
    zoneinfo.reset_tzpath([str(zones), *zoneinfo.TZPATH])
    schedules.available_timezones.cache_clear()
    yield dt.datetime.fromtimestamp(transition, dt.UTC), zones
    zoneinfo.reset_tzpath()
    schedules.available_timezones.cache_clear()


def test_a_calendar_window_across_a_dst_change_is_skipped_and_recorded(
    celery_processes, spring_forward
):
    change, zones = spring_forward
    tz = schedules.get_timezone(ZONE)
    # The window, on the zone's wall clock: from 6 s before the change (UTC+0) to 6 s
    # after it (UTC+1, an hour later on the clock): 12 seconds of real time.
    start, end = change - dt.timedelta(seconds=6), change + dt.timedelta(seconds=6)
    wall_start, wall_end = start.astimezone(tz), end.astimezone(tz)
    wall_length = wall_end.replace(tzinfo=None) - wall_start.replace(tzinfo=None)
    assert wall_length == dt.timedelta(hours=1, seconds=12)
    if wall_start.date() != wall_end.date():
        pytest.skip("the window would cross midnight")
    celery_processes.env["PYTHONTZPATH"] = str(zones)
    celery_processes.start_worker()
    celery_processes.start_beat(ready=True)
    day = wall_start.strftime("%a").upper()
    rule = calendar_services.weekly_rule(f"{day} {wall_start:%H:%M:%S}-{wall_end:%H:%M:%S}")
    calendar_services.calendar_add(name="dst-window", rules=[rule])
    job = make_job(
        trigger_type="interval", interval_every=1, interval_period="seconds", timezone=ZONE
    )
    calendar_services.job_set_calendars(job=job, names=["dst-window"])

    wait_for(
        lambda: JobExecution.objects.filter(
            job=job, status="success", scheduled_at__gte=end + dt.timedelta(seconds=2)
        ).exists(),
        timeout=120,
        what="runs after the excluded window",
        processes=celery_processes,
    )
    skipped = list(JobExecution.objects.filter(job=job, status="skipped"))
    assert [(row.excluded_by, row.missed_count) for row in skipped] == [("dst-window", 12)], [
        (row.scheduled_at, row.missed_until, row.missed_count, row.reason) for row in skipped
    ]
    row = skipped[0]
    assert start <= row.scheduled_at < start + dt.timedelta(seconds=1)
    assert end - dt.timedelta(seconds=1) <= row.missed_until < end
    assert "Excluded by calendar 'dst-window'" in row.reason
    ran = sorted(
        JobExecution.objects.filter(job=job, status="success").values_list(
            "scheduled_at", flat=True
        )
    )
    assert not [moment for moment in ran if start <= moment < end], ran
    # It ran up to the window and from its end on: the last second before, the first after.
    assert any(start - dt.timedelta(seconds=1) <= moment < start for moment in ran), ran
    assert any(end <= moment < end + dt.timedelta(seconds=1) for moment in ran), ran
