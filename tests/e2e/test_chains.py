"""Chains with real beat and worker processes: beat fires A, the worker runs it, and the
run-finished receiver on that worker starts the next job (trigger chain, linked to A's
run): B with A's result on success, C on failure; each next job starts once."""

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from scheduling import chain_services
from scheduling.chain_services import LinkSpec
from scheduling.models import JobExecution
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]


def _seen(key: str) -> list[dict]:
    path = Path(django_settings.VAR_DIR) / f"record-{key}"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _ended(processes, job, timeout: float = 90) -> JobExecution:
    def done():
        return (
            JobExecution.objects.filter(job=job)
            .exclude(status__in=["running", "cancelling", "waiting", "queued"])
            .first()
        )

    return wait_for(done, timeout=timeout, what=f"a run of {job.name} to end", processes=processes)


def _record_job(name: str, **fields):
    (Path(django_settings.VAR_DIR) / f"record-{name}").unlink(missing_ok=True)
    return make_job(
        name=name,
        task="tests.record_run",
        cron_expression="0 0 3 1 1 *",  # once a year: only the chain starts it here
        kwargs={"key": name},
        **fields,
    )


def test_a_success_starts_b_with_its_result_and_a_failure_starts_c(celery_processes):
    soon = timezone.now() + dt.timedelta(seconds=4)
    a_ok = make_job(
        name="a-ok",
        task="tests.record_run",
        trigger_type="date",
        run_at=soon,
        kwargs={"key": "a-ok", "value": {"rows": 3}},
        misfire_grace_time=60,
    )
    a_bad = make_job(
        name="a-bad",
        task="tests.value_error",
        trigger_type="date",
        run_at=soon,
        misfire_grace_time=60,
    )
    b, c, never = _record_job("b"), _record_job("c"), _record_job("never")
    chain_services.job_set_links(job=a_ok, links=[LinkSpec("b", "success", "value")])
    chain_services.job_set_links(
        job=a_bad, links=[LinkSpec("c", "failure", "value"), LinkSpec("never", "success")]
    )
    celery_processes.start_beat(ready=True)
    celery_processes.start_worker()

    first_ok, first_bad = _ended(celery_processes, a_ok), _ended(celery_processes, a_bad)
    assert (first_ok.trigger, first_ok.status) == ("schedule", "success"), first_ok.reason
    assert (first_bad.trigger, first_bad.status) == ("schedule", "failure")

    run_b, run_c = _ended(celery_processes, b), _ended(celery_processes, c)
    assert run_b.status == "success", run_b.exception or run_b.reason
    assert run_b.trigger == "chain" and run_b.parent_id == first_ok.pk
    assert run_b.scheduled_at == first_ok.scheduled_at
    latency = (run_b.started_at - first_ok.finished_at).total_seconds()
    print(f"chain latency: B started {latency:.3f}s after A finished")
    assert 0 <= latency < 10
    [seen_b] = _seen("b")
    assert seen_b["trigger"] == "chain"
    assert seen_b["value"] == json.loads(first_ok.result)  # A's result, as stored
    assert seen_b["value"]["value"] == {"rows": 3}

    assert run_c.status == "success" and run_c.trigger == "chain"
    assert run_c.parent_id == first_bad.pk
    [seen_c] = _seen("c")
    assert seen_c["value"] is None  # a failed run returned nothing

    time.sleep(3)  # anything more would have been sent by now
    assert not JobExecution.objects.filter(job=never).exists()
    assert JobExecution.objects.filter(job__in=[b, c]).count() == 2
    assert {r.pk for r in first_ok.children.all()} == {run_b.pk}
