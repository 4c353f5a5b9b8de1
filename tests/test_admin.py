"""Admin pages as an operator uses them, through Django's test client."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from scheduling.models import Job
from tests.factories import make_finished_run, make_job, make_waiting

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:scheduling_job_add")


def form_data(**overrides):
    data = {
        "name": "from-admin",
        "description": "",
        "group": "default",
        "task": "demo.echo",
        "args": "[]",
        "kwargs": "{}",
        "enabled": "on",
        "trigger_type": "cron",
        "timezone": "Asia/Shanghai",
        "cron_expression": "0 */5 * * * *",
        "interval_every": "",
        "interval_period": "minutes",
        "run_at_0": "",
        "run_at_1": "",
        "coalesce": "",
        "max_instances": "3",
        "overlap": "skip",
        "misfire_grace_time": "15",
        "jitter": "0",
        "soft_time_limit": "",
        "time_limit": "",
        "max_retries": "0",
        "retry_backoff": "2",
        "retry_backoff_max": "300",
        "retry_jitter": "on",
        "retry_on": "[]",
        "slow_threshold": "",
        "alert_emails": "",
        "alert_webhooks": "",
        "alert_grace": "300",
        "queue": "",
        "priority": "0",
        "exchange": "",
        "routing_key": "",
        # The chain inline (no links).
        "links_out-TOTAL_FORMS": "0",
        "links_out-INITIAL_FORMS": "0",
        "links_out-MIN_NUM_FORMS": "0",
        "links_out-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_create_a_cron_job_with_seconds(admin_client):
    response = admin_client.post(ADD_URL, form_data(cron_expression="*/10 * * * * *"))
    assert response.status_code == 302, response.content
    job = Job.objects.get(name="from-admin")
    assert job.cron_expression == "*/10 * * * * *"
    assert job.next_run_at is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cron_expression": "0 61 * * * *"}, "The minute field &#x27;61&#x27;"),
        ({"cron_expression": "* *"}, "has 2"),
        ({"args": "[1, 2"}, "Enter a valid JSON"),
        ({"args": '{"a": 1}'}, "must be a JSON list"),
        ({"kwargs": "[1]"}, "must be a JSON object"),
        ({"task": "os.system"}, "Select a valid choice"),
        ({"trigger_type": "interval"}, "at least 1"),
    ],
)
def test_bad_input_shows_an_error_and_saves_nothing(admin_client, overrides, message):
    response = admin_client.post(ADD_URL, form_data(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Job.objects.exists()


def test_change_page_shows_the_trigger_in_words_and_next_runs(admin_client):
    job = make_job(cron_expression="0 */5 * * * *")
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    html = page.content.decode()
    assert "Every 5 minutes (Asia/Shanghai)" in html
    preview = html[html.index('id="schedule-preview"') :]
    assert preview[: preview.index("</ol>")].count("<li>") == 5


def test_changelist_shows_trigger_next_run_and_last_outcome(admin_client):
    make_job(name="listed", cron_expression="0 0 9 * * 1")
    html = admin_client.get(reverse("admin:scheduling_job_changelist")).content.decode()
    assert "listed" in html and "only on Monday" in html
    assert "history" in html


def test_preview_endpoint_explains_or_names_the_error(admin_client):
    url = reverse("admin:scheduling_job_preview")
    ok = admin_client.get(
        url, {"trigger_type": "cron", "cron_expression": "*/1 * * * * *", "timezone": "UTC"}
    ).json()
    assert ok["description"] == "Every second (UTC)"
    assert len(ok["next_runs"]) == 5
    bad = admin_client.get(url, {"trigger_type": "cron", "cron_expression": "0 0 25 * * *"})
    assert bad.status_code == 400
    assert "hour field '25'" in bad.json()["error"]


def test_pause_and_resume_actions(admin_client):
    job = make_job()
    url = reverse("admin:scheduling_job_changelist")
    admin_client.post(url, {"action": "pause_jobs", "_selected_action": [job.pk], "apply": "1"})
    job.refresh_from_db()
    assert not job.enabled and job.next_run_at is None
    admin_client.post(url, {"action": "resume_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.enabled and job.next_run_at is not None


def test_actions_need_their_permissions(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_job"), Permission.objects.get(codename="change_job")
    )
    client.force_login(user)
    job = make_job()
    url = reverse("admin:scheduling_job_changelist")
    page = client.get(url).content.decode()
    assert "pause_jobs" not in page and "run_jobs_now" not in page
    client.post(url, {"action": "pause_jobs", "_selected_action": [job.pk], "apply": "1"})
    job.refresh_from_db()
    assert job.enabled

    user.user_permissions.add(Permission.objects.get(codename="pause_job"))
    user = django_user_model.objects.get(pk=user.pk)
    client.force_login(user)
    assert "pause_jobs" in client.get(url).content.decode()


def test_executions_are_read_only(admin_client):
    response = admin_client.get(reverse("admin:scheduling_jobexecution_add"))
    assert response.status_code == 403


def test_the_executions_list_shows_a_summary_of_missed_fire_times_readably(admin_client):
    import datetime as dt

    from scheduling import runs
    from scheduling.runs.rules import Missed

    job = make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
    before = job.next_run_at
    runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=before - dt.timedelta(hours=1), before=before))],
        reason="Not sent: beat was down.",
    )
    page = admin_client.get(reverse("admin:scheduling_jobexecution_changelist")).content.decode()
    first = timezone.localtime(before - dt.timedelta(hours=1))
    last = timezone.localtime(before - dt.timedelta(seconds=10))
    assert f"missed 360 fire times, {first:%Y-%m-%d %H:%M:%S} +08:00 to " in page
    assert f"{last:%Y-%m-%d %H:%M:%S} +08:00" in page


def test_run_at_is_read_in_the_jobs_timezone(admin_client):
    response = admin_client.post(
        ADD_URL,
        form_data(
            trigger_type="date",
            cron_expression="",
            timezone="Europe/Berlin",
            run_at_0="2099-01-01",
            run_at_1="09:00:00",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get(name="from-admin")
    assert job.run_at.isoformat() == "2099-01-01T08:00:00+00:00"
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    assert 'value="09:00:00"' in page.content.decode()


def test_pausing_a_broken_job_from_the_admin_works(admin_client):
    job = make_job()
    Job.objects.filter(pk=job.pk).update(task="gone.task")
    url = reverse("admin:scheduling_job_changelist")
    admin_client.post(url, {"action": "pause_jobs", "_selected_action": [job.pk], "apply": "1"})
    job.refresh_from_db()
    assert not job.enabled
    response = admin_client.post(
        url, {"action": "resume_jobs", "_selected_action": [job.pk]}, follow=True
    )
    assert "gone.task" in response.content.decode()
    job.refresh_from_db()
    assert not job.enabled


def test_enabled_needs_the_pause_permission(client, django_user_model):
    user = django_user_model.objects.create_user("editor", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_job"), Permission.objects.get(codename="change_job")
    )
    client.force_login(user)
    job = make_job()
    page = client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content.decode()
    assert 'name="enabled"' not in page


def test_dashboard_draws_its_charts(admin_client):
    job = make_job(name="charted")
    for duration in (1, 2, 3):
        make_finished_run(job, duration)
    make_finished_run(job, 4, status="failure")
    html = admin_client.get(
        reverse("admin:scheduling_dashboard"), {"job": "charted"}
    ).content.decode()
    for section in ("slowest", "outcomes", "durations", "upcoming"):
        assert f'id="{section}"' in html
    assert html.count("<svg") >= 3
    assert "charted" in html and 'id="job-stats"' in html
    assert "cdn" not in html.lower()


def _running_run(job):
    import uuid

    from tests.factories import make_running

    return make_running(job, task_result_id=str(uuid.uuid4()), worker="w1@test")


def test_a_run_in_progress_shows_its_progress_and_can_be_cancelled_from_the_job_page(
    admin_client,
):
    from scheduling.models import JobExecution

    job = make_job()
    run = _running_run(job)
    JobExecution.objects.filter(pk=run.pk).update(progress=42, progress_message="rows")
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content.decode()
    stop_url = reverse("admin:scheduling_jobexecution_stop", args=[run.pk])
    assert "Runs in progress" in page and stop_url in page and "42% rows" in page
    progress = admin_client.get(reverse("admin:scheduling_jobexecution_progress", args=[run.pk]))
    assert progress.json() == {
        "status": "running",
        "status_display": "Running",
        "in_progress": True,
        "progress": 42.0,
        "message": "rows",
        "text": "42% rows",
    }
    back = reverse("admin:scheduling_job_change", args=[job.pk])
    response = admin_client.post(stop_url, {"terminate": "0", "next": back})
    assert response.status_code == 302 and response["Location"] == back
    run.refresh_from_db()
    assert run.status == "cancelling" and run.cancelled_by == "admin"
    assert job.changes.get(action="cancel run").source == "admin"


def test_cancel_and_terminate_need_their_permission(client, django_user_model):
    from scheduling.models import JobExecution

    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_job"),
        Permission.objects.get(codename="view_jobexecution"),
    )
    client.force_login(user)
    job = make_job()
    run = _running_run(job)
    page = client.get(reverse("admin:scheduling_jobexecution_change", args=[run.pk]))
    assert "Runs in progress" in page.content.decode()
    assert 'name="terminate"' not in page.content.decode()
    url = reverse("admin:scheduling_jobexecution_changelist")
    client.post(url, {"action": "terminate_runs", "_selected_action": [run.pk]})
    stop = client.post(reverse("admin:scheduling_jobexecution_stop", args=[run.pk]))
    assert stop.status_code == 403
    assert JobExecution.objects.get(pk=run.pk).status == "running"

    user.user_permissions.add(Permission.objects.get(codename="cancel_run"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    client.post(url, {"action": "terminate_runs", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == "terminated" and run.cancelled_by == "viewer"
    # A run that is not in progress any more is named, not a 500.
    response = client.post(
        url, {"action": "cancel_runs", "_selected_action": [run.pk]}, follow=True
    )
    assert "is not running: it is Terminated" in response.content.decode()


def test_the_runs_in_progress_are_shown_in_chinese(admin_client):
    job = make_job()
    _running_run(job)
    page = admin_client.get(
        reverse("admin:scheduling_job_change", args=[job.pk]), HTTP_ACCEPT_LANGUAGE="zh-Hans"
    ).content.decode()
    assert "进行中的执行" in page and "终止" in page and "运行中" in page


def test_the_overlap_policy_is_chosen_in_the_form(admin_client):
    admin_client.post(ADD_URL, form_data(name="buffered", overlap="buffer_all"))
    assert Job.objects.get(name="buffered").overlap == "buffer_all"
    admin_client.post(ADD_URL, form_data(name="cancelling", overlap="cancel_other"))
    assert Job.objects.get(name="cancelling").overlap == "cancel_other"


def test_waiting_runs_are_shown_and_dropped_with_who_and_why(admin_client, django_user_model):
    job = make_job(overlap="buffer_one", max_instances=1)
    waiting = make_waiting(job)
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content
    assert "1 run waiting" in page.decode()
    url = reverse("admin:scheduling_jobexecution_changelist")
    asked = admin_client.post(
        url, {"action": "drop_waiting_runs", "_selected_action": [waiting.pk]}
    )
    assert "Drop waiting runs" in asked.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == "waiting"  # nothing happens before the reason is given
    admin_client.post(
        url,
        {
            "action": "drop_waiting_runs",
            "_selected_action": [waiting.pk],
            "drop": "1",
            "reason": "stale",
        },
    )
    waiting.refresh_from_db()
    assert waiting.status == "skipped"
    assert waiting.reason == "Dropped while waiting by admin: stale"

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_jobexecution"))
    admin_client.force_login(viewer)
    assert "drop_waiting_runs" not in admin_client.get(url).content.decode()
