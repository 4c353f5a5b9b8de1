"""Prometheus metrics (scheduling.metrics) and who may read them."""

import pytest
from django.urls import reverse

from tests.factories import make_finished_run, make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_metrics_are_restricted_and_expose_runs_durations_and_beat(client, settings):
    job = make_job(name="metered")
    make_finished_run(job, 0.3)
    make_finished_run(job, 2, status="failure")
    url = reverse("scheduling-metrics")
    assert client.get(url).status_code == 403
    settings.SCHEDULING = {**settings.SCHEDULING, "METRICS_TOKEN": "s3cret"}
    assert client.get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    body = client.get(url, HTTP_AUTHORIZATION="Bearer s3cret").content.decode()
    assert 'scheduled_job_runs_total{job="metered",outcome="success"} 1.0' in body
    assert 'scheduled_job_runs_total{job="metered",outcome="failure"} 1.0' in body
    assert 'scheduled_job_duration_seconds_bucket{job="metered",le="0.5"} 1.0' in body
    assert 'scheduled_job_duration_seconds_count{job="metered"} 2.0' in body
    assert 'scheduled_job_lateness_seconds_count{job="metered"} 2.0' in body
    assert "scheduler_queue_length" in body


def test_metrics_with_a_non_ascii_authorization_header_is_forbidden(client, settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "METRICS_TOKEN": "s3cret"}
    url = reverse("scheduling-metrics")
    assert client.get(url, HTTP_AUTHORIZATION="Bearer s3crét").status_code == 403
    assert client.get(url, HTTP_AUTHORIZATION="Bearer \udcff").status_code == 403
