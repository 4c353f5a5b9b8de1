"""A key scoped by a job-name glob reaches a run or a backfill by its job as it is named
now: a run recorded under a job's old name does not carry the job into the key's reach."""

import datetime as dt

import pytest

from scheduling import services
from tests.factories import make_job, make_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    messages = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kw: messages.append(kw) or kw["task_id"])
    return messages


def test_a_run_of_a_job_renamed_out_of_the_keys_glob_cannot_be_rerun(client_for, sent):
    job = make_job(name="team-a-report")
    run = make_record(job, "failure", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    services.job_update(job=job, name="team-b-report")
    team_a = client_for(["read", "run"], jobs="team-a-*")
    response = team_a.post(f"/api/v1/executions/{run.pk}/rerun/", format="json")
    assert response.status_code == 403, response.json()
    assert "team-b-report" in response.json()["detail"]
    assert sent == []
    listed = team_a.get("/api/v1/executions/").json()["results"]
    assert listed == []  # nor listed under the old name


def test_a_backfill_of_a_job_renamed_out_of_the_keys_glob_cannot_be_cancelled(client_for):
    job = make_job(name="team-a-report")
    backfill = services.job_backfill(
        job=job,
        start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        end=dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC),
    )
    services.job_update(job=job, name="team-b-report")
    team_a = client_for(["read", "run"], jobs="team-a-*")
    assert team_a.get(f"/api/v1/backfills/{backfill.pk}/").status_code == 403
    assert team_a.post(f"/api/v1/backfills/{backfill.pk}/cancel/").status_code == 403
    team_b = client_for(["read", "run"], jobs="team-b-*")
    assert team_b.get(f"/api/v1/backfills/{backfill.pk}/").status_code == 200
