"""A job group's cap on its runs at once, with real beat and worker processes: two jobs
of one group firing every second, slow runs, two workers, and never more runs going at
once than the group allows (read from the runs' start and finish times)."""

import pytest
from django.conf import settings

from scheduling import group_services, services
from scheduling.models import JobExecution, JobGroup
from tests.e2e.processes import wait_for
from tests.e2e.test_overlap import every_second, start
from tests.e2e.test_semantics import max_overlap

pytestmark = [pytest.mark.e2e]
EMBEDDED = settings.CELERY_BROKER_URL.startswith("filesystem://")


@pytest.mark.skipif(EMBEDDED, reason="two workers: Redis or RabbitMQ")
def test_a_group_cap_of_one_holds_across_two_workers(celery_processes):
    JobGroup.objects.create(name="capped", max_instances=1)
    # Each job would allow two runs at once on its own: the group's cap is what holds.
    # The buffering one fires every 3 s, so that the skipping one gets the slot in between
    # (a buffering job's waiting run takes the slot its own run frees).
    skipping = every_second(
        name="skipping", group="capped", kwargs={"seconds": 1.5}, overlap="skip"
    )
    buffering = every_second(
        name="buffering", group="capped", kwargs={"seconds": 1.5}, overlap="buffer_one"
    )
    skipping, buffering = (
        services.job_update(job=job, max_instances=2, **fields)
        for job, fields in ((skipping, {}), (buffering, {"cron_expression": "*/3 * * * * *"}))
    )
    names = start(celery_processes, workers=2, jobs=[skipping, buffering])

    def enough():
        ran = JobExecution.objects.filter(job__group="capped", status="success")
        # Checked on the way too: two runs at once fail at once, showing them.
        assert max_overlap(list(ran)) <= 1, sorted(
            (r.started_at, r.finished_at, r.job_name, r.worker) for r in ran
        )
        return (
            ran.filter(job=skipping).count() >= 2
            and ran.filter(job=buffering, waiting_since__isnull=False).count() >= 2
            and set(ran.values_list("worker", flat=True)) == set(names)
            and JobExecution.objects.filter(
                job__group="capped", status="skipped", reason__startswith="Group capped is full"
            ).exists()
        )

    wait_for(enough, timeout=150, what="runs of both jobs on both workers, and skips",
             interval=0.2, processes=celery_processes)  # fmt: skip
    for job in (skipping, buffering):
        services.job_pause(job=job)
    wait_for(
        lambda: (
            not JobExecution.objects.filter(
                job__group="capped", status__in=["running", "waiting", "queued", "cancelling"]
            ).exists()
        ),
        timeout=60,
        what="the runs sent before the pause to end",
        processes=celery_processes,
    )
    ran = list(JobExecution.objects.filter(job__group="capped", finished_at__isnull=False,
                                           started_at__isnull=False).exclude(status="skipped"))  # fmt: skip
    assert {r.status for r in ran} == {"success"}, [(r.job_name, r.status, r.reason) for r in ran]
    assert max_overlap(ran) == 1, sorted((r.started_at, r.finished_at, r.job_name) for r in ran)
    skipped = JobExecution.objects.filter(job__group="capped", status="skipped")
    # The skipping job is skipped for the group (its own max instances is 2); the
    # buffering one only when one of its runs waits already (buffer one).
    assert all(
        r.reason.startswith("Group capped is full: 1 run(s) of its jobs going; its max "
                            "instances is 1") for r in skipped.filter(job=skipping)
    ), [r.reason for r in skipped.filter(job=skipping)]  # fmt: skip
    waited = [r for r in ran if r.waiting_since]
    assert waited and all(r.job_id == buffering.pk for r in waited)
    # With no cap the same jobs overlap: the cap was what kept them apart.
    group_services.group_update(name="capped", max_instances=None)
    for job in (skipping, buffering):
        services.job_resume(job=job)
    wait_for(
        lambda: (
            max_overlap(list(JobExecution.objects.filter(job__group="capped", status="success")))
            >= 2
        ),
        timeout=60,
        what="two runs of the group at once without the cap",
        processes=celery_processes,
    )


@pytest.mark.skipif(EMBEDDED, reason="a worker of one queue only: Redis or RabbitMQ")
def test_beat_sends_a_job_without_a_queue_to_its_groups_queue(celery_processes):
    from tests.e2e.test_routing import queue_name
    from tests.factories import make_job

    queue = queue_name()
    JobGroup.objects.create(name="routed", queue=queue)
    job = make_job(task="demo.noop", group="routed", cron_expression="*/1 * * * * *",
                   enabled=False)  # fmt: skip
    celery_processes.start_worker("w1", queues=[queue])  # only the group's queue
    celery_processes.start_beat(ready=True)
    services.job_resume(job=job)
    run = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").first(),
        timeout=60,
        what="a scheduled run on the worker of the group's queue",
        processes=celery_processes,
    )
    assert run.worker == "w1@e2e"
