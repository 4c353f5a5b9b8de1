"""How fast one process can publish N run messages to Redis, technique by technique.

Each technique sends the same N messages of ``scheduling.run_job`` (N jobs, one fire time
each, the options beat gives them: shadow name, masked arguments, expiry, priority,
queue) to Redis through the connection options beat uses, and the list is emptied after
each. Printed: messages a second, and for the batched ones how the time splits between
building the messages and publishing them.

1. ``apply_async`` one at a time (``services.job_dispatch``: what beat did before);
2. the same inside kombu's ``Producer.batch()`` (one pipelined round trip per batch);
3. messages built by :class:`scheduling.publish.Messages` (Celery's ``as_task_v2``,
   body serialised once, routes resolved once per queue), sent by
   :func:`scheduling.publish.messages_publish` in batches of 500;
4. as 3, with the building and publishing split over 2 threads, each with its own
   connection.

On Redis, 3 is beat's own pipeline (kombu's envelopes, an ``LPUSH`` per priority list);
``--kombu-batch`` adds 3 as it was before, through ``Producer.batch()``. With ``--amqp
URL`` the same on RabbitMQ (beat's connection: publisher confirms): 1, 3 as before (each
message waits for its confirm: the channel's confirms selected before the batch path saw
it) and 3 (a batch's confirms awaited at once).

    DJANGO_DEBUG=1 .venv/bin/python benchmarks/publish.py [--messages 10000] [--amqp URL]

Uses Redis $BENCH_REDIS_URL (default db 6) and needs no database.
"""

import argparse
import contextlib
import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
BATCH = 500


def setup() -> None:
    os.environ["CELERY_BROKER_URL"] = REDIS_URL
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()


def jobs(count: int) -> list:
    from scheduling.models import Job

    return [
        Job(
            pk=index + 1,
            name=f"bench-{index}",
            task="demo.echo",
            trigger_type="interval",
            interval_every=10,
            interval_period="seconds",
            kwargs={"message": "hi", "token": "s3cret"},
            priority=index % 10,
            queue="" if index % 2 else "bench",
        )
        for index in range(count)
    ]


BROKER = {"url": ""}  # --amqp: RabbitMQ instead of Redis


def producer():
    from project.celery import app
    from scheduling.scheduler import beat_broker_options

    url = BROKER["url"] or None
    driver = "amqp" if url else "redis"
    connection = app.connection_for_write(
        url, connect_timeout=0.5, transport_options=beat_broker_options(driver, 0.5)
    )
    return app.amqp.Producer(connection, auto_declare=False)


def empty() -> int:
    if BROKER["url"]:
        from kombu import Connection

        count = 0
        with Connection(BROKER["url"]) as connection:
            for queue in ("celery", "bench"):
                channel = connection.channel()
                with contextlib.suppress(Exception):  # not declared yet
                    count += channel.queue_purge(queue) or 0
                with contextlib.suppress(Exception):
                    channel.close()
        return count
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    count = 0
    for key in client.keys("celery*") + client.keys("bench*"):
        if client.type(key) == b"list":
            count += client.llen(key)
    client.flushdb()
    return count


def one_at_a_time(all_jobs, fire) -> dict:
    from scheduling import services

    sender = producer()
    started = time.perf_counter()
    for job in all_jobs:
        services.job_dispatch(
            job=job, trigger="schedule", scheduled_at=fire, producer=sender, retry_policy={}
        )
    return {"total": time.perf_counter() - started}


def apply_async_batched(all_jobs, fire) -> dict:
    from scheduling import services

    sender = producer()
    started = time.perf_counter()
    for start in range(0, len(all_jobs), BATCH):
        with sender.batch(max_size=BATCH):
            for job in all_jobs[start : start + BATCH]:
                services.job_dispatch(
                    job=job,
                    trigger="schedule",
                    scheduled_at=fire,
                    producer=sender,
                    retry_policy={},
                )
    return {"total": time.perf_counter() - started}


def build(all_jobs, fire, messages) -> list:
    from project.celery import app
    from scheduling import services

    out = []
    now = dt.datetime.now(dt.UTC)
    for job in all_jobs:
        kwargs, options = services.run_message(
            job=job, trigger="schedule", scheduled_at=fire, jitter=0.0, app=app
        )
        out.append(messages.build(kwargs=kwargs, now=now, **options))
    return out


def prebuilt(all_jobs, fire) -> dict:
    from project.celery import app
    from scheduling import publish
    from scheduling.tasks import run_job

    sender = producer()
    messages = publish.Messages(app, run_job._get_current_object())
    started = time.perf_counter()
    built = build(all_jobs, fire, messages)
    middle = time.perf_counter()
    for start in range(0, len(built), BATCH):
        publish.messages_publish(sender, built[start : start + BATCH])
    ended = time.perf_counter()
    return {"total": ended - started, "build": middle - started, "publish": ended - middle}


def prebuilt_one_confirm_at_a_time(all_jobs, fire) -> dict:
    """3 as it was before on RabbitMQ: kombu's Producer.batch(), which there publishes
    each message at once and waits for its confirm (the channel's confirms selected before
    scheduling.publish saw it, so it takes kombu's way)."""
    sender = producer()
    sender.channel._confirm_selected = True
    sender.channel.confirm_select()
    return _timed_prebuilt(sender, all_jobs, fire)


def prebuilt_kombu_batch(all_jobs, fire) -> dict:
    """3 as it was before on Redis: each message through kombu's Producer.batch()."""
    from scheduling import publish

    sender = producer()
    original = publish.redis_pushes_apply
    publish.redis_pushes_apply = lambda channel, messages: False
    try:
        return _timed_prebuilt(sender, all_jobs, fire)
    finally:
        publish.redis_pushes_apply = original


def _timed_prebuilt(sender, all_jobs, fire) -> dict:
    from project.celery import app
    from scheduling import publish
    from scheduling.tasks import run_job

    messages = publish.Messages(app, run_job._get_current_object())
    started = time.perf_counter()
    built = build(all_jobs, fire, messages)
    middle = time.perf_counter()
    for start in range(0, len(built), BATCH):
        publish.messages_publish(sender, built[start : start + BATCH])
    ended = time.perf_counter()
    return {"total": ended - started, "build": middle - started, "publish": ended - middle}


def threaded(all_jobs, fire, threads: int = 2) -> dict:
    from project.celery import app
    from scheduling import publish
    from scheduling.tasks import run_job

    producers = [producer() for _ in range(threads)]
    for sender in producers:
        sender.connection.ensure_connection()
    messages = publish.Messages(app, run_job._get_current_object())
    build(all_jobs[:1], fire, messages)  # routes resolved before the clock starts

    def work(index: int) -> None:
        mine = all_jobs[index::threads]
        built = build(mine, fire, messages)
        for start in range(0, len(built), BATCH):
            publish.messages_publish(producers[index], built[start : start + BATCH])

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"total": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--amqp", default="", help="RabbitMQ URL: measure there instead")
    parser.add_argument("--kombu-batch", action="store_true", help="Redis: 3 as before too")
    args = parser.parse_args()
    setup()
    BROKER["url"] = args.amqp
    all_jobs = jobs(args.messages)
    fire = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # no expiry during the run
    empty()
    print(f"{args.messages:,} run messages to {args.amqp or REDIS_URL}, one process")
    techniques = [
        ("1. apply_async, one at a time", one_at_a_time),
        ("2. apply_async inside Producer.batch()", apply_async_batched),
        ("3. Messages.build + messages_publish", prebuilt),
        ("4. as 3, 2 threads", threaded),
    ]
    if args.kombu_batch:
        techniques.insert(2, ("3 before: through Producer.batch()", prebuilt_kombu_batch))
    if args.amqp:
        techniques = [
            techniques[0],
            ("3 before: a confirm per message", prebuilt_one_confirm_at_a_time),
            ("3. Messages.build + messages_publish", prebuilt),
        ]
    for label, technique in techniques:
        figures = technique(all_jobs, fire)
        arrived = empty()
        split = ""
        if "build" in figures:
            split = f"  (build {figures['build']:.2f} s, publish {figures['publish']:.2f} s)"
        print(
            f"  {label:<42} {figures['total']:6.2f} s  {args.messages / figures['total']:8,.0f} msg/s"
            f"  {arrived:,} arrived{split}",
            flush=True,
        )


if __name__ == "__main__":
    main()
