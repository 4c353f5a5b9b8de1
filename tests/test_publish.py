"""Beat's batches of messages (scheduling.publish): each message is the one ``apply_async``
sends, routed the same way, and a batch leaves whole or raises.

Messages go through a real kombu connection (the in-memory transport, and Redis when one
answers at ``TEST_REDIS_URL``) and are read back off their queues.
"""

import dataclasses
import datetime as dt
import json
import os

import pytest
from django.utils import timezone
from kombu import Connection

from project.celery import app
from scheduling import publish, services
from scheduling.scheduler import beat_broker_options
from scheduling.tasks import run_job
from tests.factories import make_job

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def messages() -> publish.Messages:
    return publish.Messages(app, app.tasks[run_job.name])


def run_of(job, fire):
    kwargs, options = services.run_message(
        job=job, trigger="schedule", scheduled_at=fire, jitter=0.0, app=app
    )
    return kwargs, options


def take(connection, queue: str, count: int = 1) -> list:
    """The next ``count`` messages of ``queue``, as kombu delivers them to a worker."""
    channel = connection.default_channel
    got = []
    for _ in range(count):
        message = channel.basic_get(queue, no_ack=True)
        assert message is not None, f"no message on {queue!r}"
        got.append(message)
    return got


def test_a_built_message_is_the_one_apply_async_sends():
    job = make_job(kwargs={"token": "s3cret", "n": 1}, queue="reports", priority=7, time_limit=9)
    fire = timezone.now().replace(microsecond=0) + dt.timedelta(minutes=1)
    kwargs, options = run_of(job, fire)
    with Connection("memory://") as connection:
        producer = app.amqp.Producer(connection, auto_declare=False)
        run_job.apply_async(kwargs=kwargs, producer=producer, **options)
        publish.messages_publish(producer, [messages().build(kwargs=kwargs, **options)])
        theirs, ours = take(connection, "reports", 2)
    volatile = {"id", "root_id"}
    assert {k: v for k, v in ours.headers.items() if k not in volatile} == {
        k: v for k, v in theirs.headers.items() if k not in volatile
    }
    assert ours.headers["shadow"] == job.task and "s3cret" not in ours.headers["kwargsrepr"]
    assert ours.headers["timelimit"] == [9, None]
    assert json.loads(ours.body) == json.loads(theirs.body)
    assert (ours.content_type, ours.content_encoding) == ("application/json", "utf-8")
    for name in ("priority", "reply_to", "delivery_mode"):
        assert ours.properties.get(name) == theirs.properties.get(name), name
    # The TTL in milliseconds, counted from when each was built.
    assert int(ours.properties["expiration"]) == pytest.approx(
        int(theirs.properties["expiration"]), abs=1000
    )
    assert ours.delivery_info["routing_key"] == theirs.delivery_info["routing_key"] == "reports"


def test_a_route_is_resolved_once_per_queue_and_a_batch_keeps_each_messages_own():
    fire = timezone.now() + dt.timedelta(minutes=1)
    built = messages()
    jobs = [make_job(name=f"j{i}", queue=("" if i % 2 else "reports")) for i in range(4)]
    batch = [built.build(kwargs=run_of(job, fire)[0], **run_of(job, fire)[1]) for job in jobs]
    assert batch[0].route is batch[2].route and batch[1].route is batch[3].route
    with Connection("memory://") as connection:
        producer = app.amqp.Producer(connection, auto_declare=False)
        publish.messages_publish(producer, batch)
        default = take(connection, "celery", 2)
        reports = take(connection, "reports", 2)
    assert [m.headers["periodic_task_name"] for m in reports] == ["j0", "j2"]
    assert [m.headers["periodic_task_name"] for m in default] == ["j1", "j3"]


def redis_answers(url: str = REDIS_URL) -> bool:
    try:
        with Connection(url, connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not redis_answers(), reason="needs Redis")
def test_on_redis_a_batch_is_pipelined_onto_each_priority_list():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    fire = timezone.now() + dt.timedelta(minutes=1)
    jobs = [make_job(name=f"p{i}", queue="publish-test", priority=i % 2 * 9) for i in range(6)]
    built = messages()
    batch = [built.build(kwargs=run_of(job, fire)[0], **run_of(job, fire)[1]) for job in jobs]
    client.delete("publish-test", "publish-test\x06\x169")
    with Connection(REDIS_URL, transport_options={"priority_steps": list(range(10))}) as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        assert producer.channel.supports_batch_publish  # kombu's PublishBatch: one pipeline
        publish.messages_publish(producer, batch)
    try:
        # Priority 9 (most urgent) is kombu's step 0 on Redis: the plain list.
        assert client.llen("publish-test") == 3 and client.llen("publish-test\x06\x169") == 3
    finally:
        client.delete("publish-test", "publish-test\x06\x169")


@pytest.mark.skipif(not redis_answers(), reason="needs Redis")
def test_on_redis_a_pushed_message_is_byte_for_byte_what_kombu_pushes():
    """The batch's own LPUSH writes kombu's envelope: the same JSON, on the same priority
    list, as kombu's Producer.publish (all but the random delivery tag)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    fire = timezone.now().replace(microsecond=0) + dt.timedelta(minutes=1)
    jobs = [
        make_job(name=f"w{i}", queue="wire-test", priority=i * 3, kwargs={"n": i}) for i in range(4)
    ]
    built = messages()
    now = timezone.now()
    batch = [
        built.build(kwargs=run_of(job, fire)[0], now=now, **run_of(job, fire)[1]) for job in jobs
    ]
    keys = ["wire-test", *(f"wire-test\x06\x16{step}" for step in range(1, 10))]
    client.delete(*keys)
    with Connection(REDIS_URL, transport_options={"priority_steps": list(range(10))}) as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        assert publish.redis_pushes_apply(producer.channel, batch)
        publish.messages_publish(producer, batch)
        ours = {key: client.lrange(key, 0, -1) for key in keys}
        client.delete(*keys)
        for message in batch:  # kombu's own path, one at a time
            producer.publish(
                message.body,
                exchange=message.route.exchange,
                routing_key=message.route.routing_key,
                delivery_mode=message.route.delivery_mode,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                headers=message.headers,
                retry=False,
                **message.properties,
            )
        theirs = {key: client.lrange(key, 0, -1) for key in keys}
    client.delete(*keys)

    def without_tag(raw: bytes) -> bytes:
        envelope = json.loads(raw)
        assert envelope["properties"].pop("delivery_tag")
        return json.dumps(envelope).encode()

    assert {k: [without_tag(m) for m in v] for k, v in ours.items() if v} == {
        k: [without_tag(m) for m in v] for k, v in theirs.items() if v
    }
    assert sum(len(v) for v in ours.values()) == 4 and len([v for v in ours.values() if v]) == 4


@pytest.mark.skipif(not redis_answers(), reason="needs Redis")
def test_on_redis_a_message_to_a_named_exchange_goes_through_kombu():
    built = messages()
    fire = timezone.now() + dt.timedelta(minutes=1)
    job = make_job(name="x1")
    message = built.build(kwargs=run_of(job, fire)[0], **run_of(job, fire)[1])
    routed = dataclasses.replace(
        message, route=dataclasses.replace(message.route, exchange="fanout-x")
    )
    with Connection(REDIS_URL) as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        assert publish.redis_pushes_apply(producer.channel, [message])
        assert not publish.redis_pushes_apply(producer.channel, [message, routed])
    with Connection("memory://") as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        assert not publish.redis_pushes_apply(producer.channel, [message])


def amqp_connection() -> Connection:
    """A connection with beat's options: publisher confirms, bounded reads."""
    return Connection(AMQP_URL, transport_options=beat_broker_options("amqp", 2.0))


@pytest.mark.skipif(not redis_answers(AMQP_URL), reason="needs RabbitMQ")
def test_on_rabbitmq_a_batch_waits_once_for_all_its_confirms_and_each_message_arrives():
    fire = timezone.now() + dt.timedelta(minutes=1)
    queue = f"confirm-test-{os.getpid()}"
    jobs = [make_job(name=f"c{i}", queue=queue, priority=i % 10) for i in range(30)]
    built = messages()
    batch = [built.build(kwargs=run_of(job, fire)[0], **run_of(job, fire)[1]) for job in jobs]
    with amqp_connection() as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        try:
            publish.messages_publish(producer, batch[:20])
            confirms = producer.channel.__dict__["_scheduling_confirms"]
            assert confirms.highest == 20 and not confirms.outstanding
            # What kombu publishes on the same channel, one at a time (the run, and its
            # task-sent event when those are on), keeps the count; a channel kombu opened
            # instead (Celery may revive the producer) gets a count of its own.
            kwargs, options = run_of(jobs[0], fire)
            run_job.apply_async(kwargs=kwargs, producer=producer, **options)
            channel = producer.channel
            before = channel.__dict__.get("_scheduling_confirms")
            before = before.highest if before is not None else 0
            publish.messages_publish(producer, batch[20:])
            confirms = channel.__dict__["_scheduling_confirms"]
            assert confirms.highest == before + 10 and not confirms.outstanding
            got = take(conn, queue, 31)
        finally:
            producer.channel.queue_delete(queue)
    names = sorted(m.headers["periodic_task_name"] for m in got)
    assert names == sorted([f"c{i}" for i in range(30)] + ["c0"])
    assert {m.properties["priority"] for m in got} == set(range(10))


@pytest.mark.skipif(not redis_answers(AMQP_URL), reason="needs RabbitMQ")
def test_on_rabbitmq_a_channel_confirmed_before_is_published_one_at_a_time():
    with amqp_connection() as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        channel = producer.channel
        channel._confirm_selected = True  # as kombu leaves it after its first publish
        channel.confirm_select()
        assert publish._confirms(channel) is None
    with Connection(AMQP_URL) as conn:  # no confirms: kombu's way
        assert publish._confirms(app.amqp.Producer(conn, auto_declare=False).channel) is None


@pytest.mark.skipif(not redis_answers(AMQP_URL), reason="needs RabbitMQ")
def test_on_rabbitmq_a_channel_reopened_after_an_error_counts_its_confirms_from_one_again():
    from amqp.exceptions import NotFound

    fire = timezone.now() + dt.timedelta(minutes=1)
    queue = f"reopen-test-{os.getpid()}"
    jobs = [make_job(name=f"r{i}", queue=queue) for i in range(6)]
    built = messages()
    batch = [built.build(kwargs=run_of(job, fire)[0], **run_of(job, fire)[1]) for job in jobs]
    with amqp_connection() as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        channel = producer.channel
        try:
            publish.messages_publish(producer, batch[:3])
            with pytest.raises(NotFound):  # the server closes the channel; py-amqp reopens it
                channel.queue_declare(queue=f"absent-{os.getpid()}", passive=True)
            assert not channel._confirm_selected
            publish.messages_publish(producer, batch[3:])
            confirms = channel.__dict__["_scheduling_confirms"]
            assert confirms.highest == 3 and not confirms.outstanding
            got = take(conn, queue, 6)
        finally:
            producer.channel.queue_delete(queue)
    assert sorted(m.headers["periodic_task_name"] for m in got) == [f"r{i}" for i in range(6)]
