"""The admin as an operator's console: times to the second with an unambiguous offset,
relative times, human durations, badges, the running-now page and the job page's strip."""

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone, translation

from scheduling import display
from scheduling.models import JobAlertStatus, JobExecution
from tests.factories import make_finished_run, make_job, make_running

pytestmark = pytest.mark.django_db
UTC = dt.UTC
SECONDS_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d")


def test_a_time_is_shown_to_the_second_with_its_offset_not_an_abbreviation():
    moment = dt.datetime(2026, 12, 1, 8, 12, 5, tzinfo=UTC)
    assert display.exact(moment, "Asia/Shanghai") == "2026-12-01 16:12:05 +08:00"
    assert display.exact(moment, "America/New_York") == "2026-12-01 03:12:05 -05:00"
    assert display.exact(moment, "Asia/Kolkata") == "2026-12-01 13:42:05 +05:30"
    assert display.utc(moment) == "2026-12-01 08:12:05 UTC"
    assert display.hover(moment, "Asia/Shanghai") == (
        "2026-12-01 16:12:05 +08:00 · 2026-12-01 08:12:05 UTC"
    )


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.0004, "0.4 ms"),
        (0.85, "850 ms"),
        (2.44, "2.4 s"),
        (42.4, "42 s"),
        (185, "3 min 5 s"),
        (3720, "1 h 2 min"),
        (7200, "2 h"),
        (90000, "1 d 1 h"),
    ],
)
def test_durations_read_in_human_units(seconds, words):
    assert display.duration(seconds) == words


def test_a_missing_duration_is_a_dash():
    assert display.duration(None) == "—"


def test_relative_times_say_in_or_ago_and_are_translated():
    now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert display.relative(now + dt.timedelta(seconds=125), now) == "in 2 min 5 s"
    assert display.relative(now - dt.timedelta(seconds=3), now) == "3 s ago"
    assert display.relative(now, now) == "now"
    with translation.override("zh-hans"):
        assert display.relative(now - dt.timedelta(seconds=3), now) == "3 秒前"
        assert display.relative(now + dt.timedelta(minutes=2), now) == "2 分钟后"


def test_the_jobs_list_shows_relative_times_with_the_exact_time_on_hover(admin_client):
    job = make_job(name="listed", cron_expression="0 0 * * * *", timezone="Asia/Kolkata")
    make_finished_run(job, 0.85)
    job.refresh_from_db()
    job.last_status, job.last_duration = "success", 0.85
    job.last_run_at = timezone.now() - dt.timedelta(seconds=30)
    job.save(update_fields=["last_status", "last_duration", "last_run_at"])
    html = admin_client.get(reverse("admin:scheduling_job_changelist")).content.decode()
    row = html[html.index("field-next_run") :]
    assert re.search(
        r'<time datetime="[^"]+" title="[^"]+ \+05:30 · [^"]+ UTC" data-live="relative"'
        r' data-now="[^"]+">in \d+',
        row,
    )
    last = html[html.index('<td class="field-last_outcome">') :]
    assert 'class="badge badge-success"' in last[:400]
    assert re.search(r">\d+ s ago</time>", last[:600])
    assert "850 ms" in last[:800]


def test_the_executions_list_shows_times_to_the_second_and_human_durations(admin_client):
    job = make_job(timezone="Asia/Shanghai")
    make_finished_run(job, 2.44)
    html = admin_client.get(reverse("admin:scheduling_jobexecution_changelist")).content.decode()
    started = html[html.index('<td class="field-fire_time_s">') :][:300]
    assert SECONDS_WITH_OFFSET.search(started) and "+08:00" in started
    assert "2.4 s" in html and "500 ms" in html  # duration, lateness
    assert 'class="badge badge-success"' in html


def test_the_running_now_page_lists_runs_in_progress_with_elapsed_worker_and_progress(
    admin_client,
):
    job = make_job(name="busy")
    run = make_running(job, started_at=timezone.now() - dt.timedelta(seconds=125), worker="w1@host")
    JobExecution.objects.filter(pk=run.pk).update(progress=40, progress_message="rows")
    make_finished_run(make_job(name="idle"), 1)
    html = admin_client.get(reverse("admin:scheduling_running")).content.decode()
    assert "busy" in html and "idle" not in html
    assert "w1@host" in html and "40% rows" in html and "2 min 5 s" in html
    assert reverse("admin:scheduling_jobexecution_stop", args=[run.pk]) in html
    assert "scheduling/running_now.js" in html
    rows = admin_client.get(reverse("admin:scheduling_running"), {"rows": "1"}).content.decode()
    assert "<html" not in rows and 'id="running-list"' in rows and "w1@host" in rows


def test_running_now_needs_the_view_permission_and_shows_stop_buttons_only_with_cancel_run(
    client, django_user_model
):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    make_running(make_job())
    assert client.get(reverse("admin:scheduling_running")).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_jobexecution"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    page = client.get(reverse("admin:scheduling_running")).content.decode()
    assert 'class="running-run"' in page and 'name="terminate"' not in page


def test_running_now_is_translated(admin_client):
    make_running(make_job())
    page = admin_client.get(
        reverse("admin:scheduling_running"), HTTP_ACCEPT_LANGUAGE="zh-Hans"
    ).content.decode()
    assert "正在运行" in page and "终止" in page and "已运行" in page


def test_the_job_page_shows_its_last_runs_as_ticks_its_statistics_and_alert_state(
    admin_client,
):
    job = make_job()
    for index in range(55):
        make_finished_run(
            job, 1.5, "failure" if index % 5 == 0 else "success", ago=dt.timedelta(minutes=index)
        )
    JobAlertStatus.objects.create(job=job, kind="failure", firing=True, since=timezone.now())
    html = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content.decode()
    strip = html[html.index('id="run-strip"') : html.index("</div>", html.index('id="run-strip"'))]
    assert strip.count('class="tick"') == 50
    assert strip.count("#ba2121") == 10  # the failures' colour
    assert re.search(r'title="[^"]+ \+08:00 · Failure · 1.5 s"', strip)
    stats = html[html.index('id="job-statistics"') :]
    assert "<td>55</td>" in stats[:1500] and "<td>80%</td>" in stats[:1500]
    assert "since" in html[html.index('id="alert-state"') :][:500]
    next_runs = html[html.index("field-next_runs") :][:3000]
    assert (
        len(re.findall(r'title="[^"]+ \+08:00 · [^"]+" data-live="relative"[^>]*>in ', next_runs))
        == 5
    )


def test_an_execution_page_reads_as_a_timeline_with_links_and_a_copyable_traceback(
    admin_client,
):
    job = make_job(timezone="Asia/Shanghai")
    first = make_finished_run(job, 2.44, "failure")
    JobExecution.objects.filter(pk=first.pk).update(
        jitter=0.2, traceback="Traceback (most recent call last):\nValueError: boom"
    )
    retry = make_finished_run(job, 1, ago=dt.timedelta(minutes=4))
    JobExecution.objects.filter(pk=retry.pk).update(attempt=1, retry_of=first)
    html = admin_client.get(
        reverse("admin:scheduling_jobexecution_change", args=[first.pk])
    ).content.decode()
    timeline = html[
        html.index('id="run-timeline"') : html.index("</ol>", html.index("run-timeline"))
    ]
    steps = re.findall(r'<span class="step">([^<]+)</span>', timeline)
    # A scheduled run's send time is not recorded: no "sent" step is made up from its
    # fire time and jitter; the jitter is told with the fire time.
    assert steps == ["fire time", "started", "finished"]
    assert "its jitter: 200 ms" in timeline
    assert len(SECONDS_WITH_OFFSET.findall(timeline)) >= 3
    assert "500 ms late" in timeline and "took 2.4 s" in timeline
    assert reverse("admin:scheduling_job_change", args=[job.pk]) in html
    assert reverse("admin:scheduling_jobexecution_change", args=[retry.pk]) in html
    assert 'data-copy="run-traceback"' in html and "ValueError: boom" in html
    assert "scheduling/copy.js" in html
    # The timeline opens the page; each time is shown once, to the second.
    assert html.index("field-timeline") < html.index("field-job_name")
    assert "field-started_at" not in html and html.count("field-started_s") == 1


def test_the_dashboard_shows_missed_fire_times_apart_one_line_per_cause(admin_client):
    from scheduling import runs
    from scheduling.runs.rules import Missed

    jobs = [
        make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
        for _ in range(3)
    ]
    runs.execution_record_missed_summaries(
        missed=[
            (
                job,
                job.trigger(),
                Missed(first=job.next_run_at - dt.timedelta(minutes=20), before=job.next_run_at),
            )
            for job in jobs
        ],
        reason="Not sent: beat was down.",
    )
    failing = make_job(name="failing")
    make_finished_run(failing, 1, "failure")
    make_finished_run(failing, 1, "failure")
    html = admin_client.get(
        reverse("admin:scheduling_dashboard"), {"window": "hour"}
    ).content.decode()
    missed = html[html.index('id="missed"') : html.index("</section>", html.index('id="missed"'))]
    assert missed.count("<tr>") == 2  # the header and one cause
    assert (
        "Not sent: beat was down." in missed and "<td>360</td>" in missed and "<td>3</td>" in missed
    )
    outcomes = html[
        html.index('id="outcomes"') : html.index("</section>", html.index('id="outcomes"'))
    ]
    assert "missed" not in outcomes  # not a tall grey bar among the outcomes
    failures = html[
        html.index('id="failures"') : html.index("</section>", html.index('id="failures"'))
    ]
    assert "failing: 2" in failures
    heat = html[html.index('id="heatmap"') : html.index("</section>", html.index('id="heatmap"'))]
    assert heat.count("<rect") >= 1 and "<svg" in heat
    assert re.search(r"Times in Asia/Shanghai \(\+08:00\); window \S+ \S+ \+08:00 to", html)
    assert '<option value="hour" selected>1 h</option>' in html


def test_the_job_page_shows_its_own_times_in_the_jobs_zone_to_the_second(admin_client):
    job = make_job(timezone="America/New_York")
    moment = dt.datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC)  # 08:00:05 EDT, 20:00:05 in Shanghai
    type(job).objects.filter(pk=job.pk).update(last_run_at=moment, paused_at=moment)
    html = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content.decode()
    last = html[html.index('class="form-row field-last_run_at_zoned') :][:1200]
    assert "2026-07-01 08:00:05 -04:00 · 2026-07-01 12:00:05 UTC" in last
    assert ">2026-07-01 08:00:05 -04:00</time>" in last
    created = html[html.index("field-created_at_zoned") :][:1200]
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d -0[45]:00</time>", created)
    # The field's label and help text stay; the stock field (server's zone) is not shown.
    resume = html[html.index("field-resume_at_zoned") :][:3000]
    assert "Resumes at:" in resume and "A paused job resumes by itself then" in resume
    assert "field-last_run_at " not in html and 'field-last_run_at"' not in html
    assert "scheduling/live_times.js" in html and reverse("admin:scheduling_jsi18n") in html


def test_a_view_only_user_sees_the_jobs_date_fields_in_its_zone(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(user)
    job = make_job(
        timezone="Asia/Kolkata",
        start_at=dt.datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC),
    )
    html = client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content.decode()
    start = html[html.index("field-start_at_zoned") :][:1200]
    assert ">2026-01-01 05:30:07 +05:30</time>" in start


def test_a_run_sent_by_hand_shows_when_it_was_sent_in_its_timeline(admin_client):
    job = make_job(timezone="Asia/Kolkata")
    sent = dt.datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC)
    run = make_running(job, started_at=sent + dt.timedelta(seconds=2), sent_at=sent)
    html = admin_client.get(
        reverse("admin:scheduling_jobexecution_change", args=[run.pk])
    ).content.decode()
    timeline = html[
        html.index('id="run-timeline"') : html.index("</ol>", html.index("run-timeline"))
    ]
    steps = re.findall(r'<span class="step">([^<]+)</span>', timeline)
    assert steps == ["sent", "started"]
    assert ">2026-03-02 15:30:01 +05:30</time>" in timeline
    # The stock read-only field is in the job's zone too.
    assert ">2026-03-02 15:30:01 +05:30</time>" in html[html.index("field-sent_at_zoned") :][:800]


def test_live_times_are_marked_for_the_pages_script_and_their_words_translated(
    admin_client,
):
    job = make_job(name="busy")
    run = make_running(job, started_at=timezone.now() - dt.timedelta(seconds=65))
    running = admin_client.get(reverse("admin:scheduling_running")).content.decode()
    assert re.search(r'data-live="elapsed" data-now="[^"]+">1 min 5 s</time>', running)
    assert "scheduling/live_times.js" in running and reverse("admin:scheduling_jsi18n") in running
    executions = admin_client.get(
        reverse("admin:scheduling_jobexecution_changelist")
    ).content.decode()
    started = executions[executions.index('<td class="field-started_ago">') :][:400]
    assert 'data-live="relative"' in started and re.search(r">1 min 5 s ago</time>", started)
    assert "scheduling/live_times.js" in executions
    assert run.pk
    catalog = admin_client.get(
        reverse("admin:scheduling_jsi18n"), HTTP_ACCEPT_LANGUAGE="zh-Hans"
    ).content.decode()
    for words in ("%(span)s\\u540e", "%(span)s\\u524d", "\\u521a\\u521a", "\\u5206\\u949f"):
        assert words in catalog, words


def test_the_dashboard_shows_its_times_in_the_timezone_the_operator_chose(admin_client):
    failing = make_job(name="failing")
    make_finished_run(failing, 1, "failure")
    url = reverse("admin:scheduling_dashboard")
    html = admin_client.get(url).content.decode()
    assert re.search(r"Times in Asia/Shanghai \(\+08:00\); window \S+ \S+ \+08:00 to", html)
    html = admin_client.get(url, {"zone": "America/Sao_Paulo"}).content.decode()
    assert re.search(r"Times in America/Sao_Paulo \(-03:00\); window \S+ \S+ -03:00 to", html)
    assert "<option selected>America/Sao_Paulo</option>" in html
    # Kept in the session for the next visit; an empty choice is the server's again.
    html = admin_client.get(url).content.decode()
    assert "Times in America/Sao_Paulo (-03:00)" in html
    html = admin_client.get(url, {"zone": "Mars/Olympus_Mons"}).content.decode()
    assert "Unknown timezone Mars/Olympus_Mons: choose one from the list." in html
    assert "Times in America/Sao_Paulo (-03:00)" in html
    html = admin_client.get(url, {"zone": ""}).content.decode()
    assert "Times in Asia/Shanghai (+08:00)" in html
    zh = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="zh-Hans").content.decode()
    assert "服务器的（Asia/Shanghai）" in zh  # noqa: RUF001


def test_the_audit_trail_and_the_alerts_show_their_times_in_the_jobs_zone(admin_client):
    from scheduling.models import Alert, JobChange

    job = make_job(name="audited", timezone="America/New_York")
    moment = dt.datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC)  # 08:00:05 EDT
    change = JobChange.objects.filter(job=job).first()
    JobChange.objects.filter(pk=change.pk).update(at=moment)
    alert = Alert.objects.create(
        job=job, job_name=job.name, kind="failure", state="firing", message="m", created_at=moment
    )
    shown = "2026-07-01 08:00:05 -04:00"
    for page in (
        reverse("admin:scheduling_jobchange_changelist"),
        reverse("admin:scheduling_jobchange_change", args=[change.pk]),
        reverse("admin:scheduling_alert_changelist"),
        reverse("admin:scheduling_alert_change", args=[alert.pk]),
    ):
        html = admin_client.get(page).content.decode()
        assert f">{shown}</time>" in html, page
        assert "2026-07-01 12:00:05 UTC" in html, page  # on hover
