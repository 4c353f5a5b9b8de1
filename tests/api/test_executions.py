"""Executions through the API: filters, cursor pagination, the key's glob."""

import datetime as dt

import pytest

from tests.factories import make_finished_run, make_job

pytestmark = pytest.mark.django_db


def test_filters(api):
    nightly, hourly = make_job(name="nightly"), make_job(name="hourly")
    make_finished_run(nightly, 1.0, ago=dt.timedelta(hours=3))
    failed = make_finished_run(nightly, 2.0, "failure", ago=dt.timedelta(minutes=5))
    make_finished_run(hourly, 3.0, ago=dt.timedelta(minutes=1))

    def ids(query):
        response = api.get(f"/api/v1/executions/{query}")
        assert response.status_code == 200, response.json()
        return [run["id"] for run in response.json()["results"]]

    assert len(ids("?job=nightly")) == 2
    assert ids(f"?job={nightly.pk}") == ids("?job=nightly")
    assert ids("?job=nightly&status=failure") == [failed.pk]
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    assert len(ids(f"?since={since.replace('+', '%2B')}")) == 2
    assert ids("?trigger=manual") == []
    assert api.get(f"/api/v1/executions/{failed.pk}/").json()["status"] == "failure"
    assert api.get("/api/v1/executions/?status=bad").status_code == 400
    assert api.get("/api/v1/executions/?since=yesterday").status_code == 400
    assert api.get("/api/v1/executions/999999/").status_code == 404


def test_cursor_pagination_walks_every_run_once_newest_first(api):
    job = make_job(name="nightly")
    runs = [make_finished_run(job, 1.0, ago=dt.timedelta(minutes=m)) for m in range(1, 8)]
    seen, url = [], "/api/v1/executions/?page_size=3"
    while url:
        page = api.get(url).json()
        seen += [run["id"] for run in page["results"]]
        url = page["next"]
    assert seen == [run.pk for run in runs]
    assert api.get("/api/v1/executions/?cursor=garbage").status_code == 404


def test_a_key_sees_only_the_runs_of_its_jobs(client_for):
    make_finished_run(make_job(name="reports.daily"), 1.0)
    other = make_finished_run(make_job(name="billing.close"), 1.0)
    client = client_for(["read"], jobs="reports.*")
    names = [run["job_name"] for run in client.get("/api/v1/executions/").json()["results"]]
    assert names == ["reports.daily"]
    assert client.get(f"/api/v1/executions/{other.pk}/").status_code == 403
