"""Prometheus metrics, read at scrape time from the rollup, the heartbeats and the broker.

Workers run on many machines; the database is what they share, so the metrics come from
it (cheaply: the daily rollup, never a scan of the executions table).
"""

import logging

from django.db.models import Max, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)

from scheduling.models import BeatHeartbeat, JobDailyStats

logger = logging.getLogger(__name__)
BUCKET_FIELDS = [f"b{i}" for i in range(len(JobDailyStats.DURATION_BUCKETS) + 1)]


def queue_length(queue: str = "celery") -> int | None:
    from celery import current_app as app

    try:
        with app.connection_for_read() as connection:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception:
        logger.warning("Could not read the length of queue %s", queue, exc_info=True)
        return None


class SchedulerCollector:
    """Collects the metrics at scrape time (a Prometheus custom collector)."""

    def collect(self):
        sums = [
            "count",
            "duration_count",
            "duration_sum",
            "lateness_count",
            "lateness_sum",
            *BUCKET_FIELDS,
        ]
        rows = (
            JobDailyStats.objects.values("job__name", "status")
            .annotate(**{f"s_{name}": Sum(name) for name in sums})
            .order_by("job__name", "status")
        )
        runs = CounterMetricFamily(
            "scheduled_job_runs", "Runs by job and outcome.", labels=["job", "outcome"]
        )
        durations = HistogramMetricFamily(
            "scheduled_job_duration_seconds", "Run duration by job.", labels=["job"]
        )
        lateness = SummaryMetricFamily(
            "scheduled_job_lateness_seconds", "Start time minus fire time by job.", labels=["job"]
        )
        per_job: dict[str, dict] = {}
        for row in rows:
            name = row["job__name"]
            runs.add_metric([name, row["status"]], row["s_count"])
            job = per_job.setdefault(name, {key: 0 for key in sums})
            for key in sums:
                job[key] += row[f"s_{key}"] or 0
        bounds = [str(b) for b in JobDailyStats.DURATION_BUCKETS] + ["+Inf"]
        for name, job in per_job.items():
            cumulative, buckets = 0, []
            for bound, field in zip(bounds, BUCKET_FIELDS, strict=True):
                cumulative += job[field]
                buckets.append((bound, cumulative))
            durations.add_metric([name], buckets, job["duration_sum"])
            lateness.add_metric([name], job["lateness_count"], job["lateness_sum"])
        yield runs
        yield durations
        yield lateness

        last_tick = BeatHeartbeat.objects.aggregate(last=Max("last_tick_at"))["last"]
        beat = GaugeMetricFamily(
            "scheduler_beat_seconds_since_last_tick", "Seconds since any beat last ticked."
        )
        if last_tick is not None:
            beat.add_metric([], (timezone.now() - last_tick).total_seconds())
        yield beat

        length = queue_length()
        queue = GaugeMetricFamily(
            "scheduler_queue_length", "Messages waiting in the queue.", labels=["queue"]
        )
        if length is not None:
            queue.add_metric(["celery"], length)
        yield queue
