"""Many task messages through one producer, in batches: beat's way of sending runs.

``Task.apply_async`` spends about a millisecond of CPU on each message (routing, Celery's
signals, serialising the body, then kombu's own envelope) and, on Redis, waits for one
round trip per message: about 900 messages a second from one process. This module splits
that work so that a burst of due runs goes out at the broker client's pace:

1. :class:`Messages` builds a message with Celery's own ``amqp.as_task_v2`` (the
   headers, body and properties ``apply_async`` would send: workers, Flower and ``celery
   inspect`` see an ordinary message) and serialises its body once; the route of a queue
   (exchange, routing key, delivery mode, the entity to declare) is resolved once per
   queue.
2. :func:`messages_publish` sends a batch. On Redis it writes the batch itself, in one
   pipelined round trip: kombu's own envelope for each message (what its Redis
   transport's ``basic_publish`` and ``_put`` build: the base64 body, ``delivery_info``,
   ``delivery_tag``, the priority list ``_q_for_pri`` names), one ``LPUSH`` per list with
   all of that list's messages in the batch's order (the same list order as one
   ``LPUSH`` each), so a worker reads each message unchanged. Through kombu's
   ``Producer.batch()`` (a message dict, a routing call and a pipeline command per
   message) a message cost about 30 µs here, written this way about 20 µs
   (``benchmarks/publish.py``). A message routed
   through a named exchange (its queues are found in kombu's bindings), a queue with an
   expiry, or a Redis client that may retry a command on its own (a pipeline could then
   run twice: kombu refuses to batch too) goes through ``Producer.batch()``, as does
   the filesystem broker, which publishes each message at once.
3. On RabbitMQ with publisher confirms (beat's connection) a batch is published through
   kombu's ``Producer.publish`` as usual, but without waiting for each confirm: the
   broker's acks of the whole batch are awaited once it is all written (its delivery tags
   counted on the channel, whose every confirm is seen here from its ``confirm.select``
   on, and from 1 again when py-amqp reopens it after a channel error). One round trip a
   batch instead of one a message. A nack, or a channel whose
   confirms were selected before this module saw it, has the batch raise or go one
   message at a time, as kombu does.

A batch either leaves whole or raises: on a connection error it is sent once more on a
fresh connection (a message may then arrive twice; the worker runs a fire time once, by
its key), and the error of the second try is raised. Fencing, how many messages a batch
holds and what to do with a failure are the caller's (:mod:`scheduling.scheduler`).
"""

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from celery.utils.nodenames import anon_nodename
from kombu import Queue
from kombu.common import maybe_declare
from kombu.serialization import dumps
from kombu.utils.json import dumps as json_dumps
from kombu.utils.uuid import uuid as delivery_tag


@dataclasses.dataclass(slots=True)
class Outgoing:
    """One message, built and serialised, ready to be published."""

    task_id: str
    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    route: "Route"


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Where a message goes: what Celery's ``send_task_message`` derives from its queue."""

    exchange: str
    routing_key: str
    delivery_mode: Any
    declare: Queue | None


class Messages:
    """Builds the messages of one Celery task of ``app``: what ``apply_async`` would send,
    with what is the same for every message read once (the app's settings: reading
    Celery's configuration costs more than building the message) and each queue's route
    resolved once (Celery's router, creating missing queues as the app configures them,
    e.g. with ``x-max-priority``)."""

    def __init__(self, app: Any, task: Any) -> None:
        self.app = app
        self.task = task
        self.name = task.name
        self.ignore_result = task.ignore_result
        self.serializer = app.conf.task_serializer
        self.reply_to = app.thread_oid
        self.origin = anon_nodename()
        self._routes: dict[tuple[str, str, str], Route] = {}

    def build(
        self,
        *,
        kwargs: dict[str, Any],
        task_id: str | None = None,
        queue: str = "",
        exchange: str = "",
        routing_key: str = "",
        priority: int | None = None,
        expires: dt.datetime | None = None,
        headers: dict[str, Any] | None = None,
        now: dt.datetime | None = None,
        **options: Any,
    ) -> Outgoing:
        """One message with keyword arguments ``kwargs``; ``options`` are ``as_task_v2``'s
        (``shadow``, ``argsrepr``, ``kwargsrepr``, ``time_limit``, ``soft_time_limit``).
        ``expires`` is also the message's TTL (``expiration``), as ``apply_async`` sets it,
        counted from ``now`` (default: the present; a batch passes one for all)."""
        task_id = task_id or str(uuid.uuid4())
        message_headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id,
            self.name,
            kwargs=kwargs,
            expires=expires,
            reply_to=self.reply_to,
            ignore_result=self.ignore_result,
            origin=self.origin,
            **options,
        )
        if headers:
            message_headers.update(headers)
        content_type, content_encoding, data = dumps(body, serializer=self.serializer)
        if priority is not None:
            properties["priority"] = priority
        if expires is not None:
            now = now or dt.datetime.now(dt.UTC)
            properties["expiration"] = max((expires - now).total_seconds(), 0)
        return Outgoing(
            task_id=task_id,
            body=data,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=message_headers,
            properties=properties,
            route=self.route(queue=queue, exchange=exchange, routing_key=routing_key),
        )

    def route(self, *, queue: str = "", exchange: str = "", routing_key: str = "") -> Route:
        """Where a message of this task with these options goes (resolved once)."""
        key = (queue, exchange, routing_key)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._resolve(queue, exchange, routing_key)
        return route

    def _resolve(self, queue: str, exchange: str, routing_key: str) -> Route:
        """The same decisions as ``celery.app.amqp.AMQP.send_task_message``."""
        amqp = self.app.amqp
        options: dict[str, Any] = {}
        if queue:
            options["queue"] = queue
        if exchange:
            options["exchange"] = exchange
        if routing_key:
            options["routing_key"] = routing_key
        options = amqp.router.route(options, self.name)
        target = options.get("queue")
        if isinstance(target, str):
            target = amqp.queues[target]
        name = options.get("exchange")
        key = options.get("routing_key")
        if target is None and name is None:
            target = amqp.queues[amqp.default_queue.name]
        exchange_type = getattr(getattr(target, "exchange", None), "type", None) or "direct"
        delivery_mode = getattr(getattr(target, "exchange", None), "delivery_mode", None)
        delivery_mode = delivery_mode or self.app.conf.task_default_delivery_mode
        if hasattr(name, "name"):
            name = name.name
        if (not name or not key) and exchange_type == "direct":
            name, key = "", target.name
        elif name is None:
            name = target.exchange.name or amqp.default_exchange.name
            key = key or target.routing_key or self.app.conf.task_default_routing_key
        return Route(exchange=name, routing_key=key, delivery_mode=delivery_mode, declare=target)


def messages_publish(producer: Any, messages: Sequence[Outgoing]) -> None:
    """Publish ``messages`` as one batch (see the module's docstring). A connection error
    has the batch sent once more on a fresh connection (kombu's ``Connection.ensure``,
    as ``Producer.publish(retry=True)`` does, with no wait); the second one is raised."""
    publish_once = producer.connection.ensure(
        producer, _publish, max_retries=1, interval_start=0, interval_step=0, interval_max=0
    )
    publish_once(producer, messages)


def _declared(producer: Any) -> set:
    """The queues declared on ``producer``'s current channel (kombu keeps its own cache
    too; this one saves its look-ups)."""
    cache = producer.__dict__.setdefault("_scheduling_declared", {})
    return cache.setdefault(id(producer.channel), set())


def _publish(producer: Any, messages: Sequence[Outgoing]) -> None:
    declared = _declared(producer)
    channel = producer.channel
    for route in {id(message.route): message.route for message in messages}.values():
        if route.declare is not None and route.declare.name not in declared:
            maybe_declare(route.declare, channel)
            declared.add(route.declare.name)
    if redis_pushes_apply(channel, messages):
        _push_to_redis(producer, channel, messages)
        return
    confirms = _confirms(channel)
    if confirms is not None:
        _publish_confirmed_together(producer, channel, confirms, messages)
        return
    with producer.batch(max_size=max(len(messages), 1)):
        for message in messages:
            _kombu_publish(producer, message)


def _kombu_publish(producer: Any, message: Outgoing) -> None:
    route = message.route
    producer.publish(
        message.body,
        exchange=route.exchange,
        routing_key=route.routing_key,
        delivery_mode=route.delivery_mode,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=message.headers,
        declare=None,
        retry=False,
        **message.properties,
    )


class MessageNacked(Exception):
    """The broker refused (nacked) a message of a batch."""


class _Confirms:
    """The publisher confirms of one py-amqp channel: the highest delivery tag settled so
    far (the number of messages published on it, when none is outstanding) and the tags
    a batch waits for."""

    def __init__(self) -> None:
        self.highest = 0
        self.outstanding: set[int] = set()
        self.nacked = False

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        self.highest = max(self.highest, delivery_tag)
        if multiple:
            self.outstanding = {tag for tag in self.outstanding if tag > delivery_tag}
        else:
            self.outstanding.discard(delivery_tag)

    def nack(self, delivery_tag: int, multiple: bool) -> None:
        if delivery_tag in self.outstanding or multiple:
            self.nacked = True
        self.ack(delivery_tag, multiple)

    def restart(self) -> None:
        """The channel was reopened (py-amqp does so in place after a channel error): the
        server counts delivery tags from 1 again, once confirms are selected anew."""
        self.highest = 0
        self.outstanding = set()


def _confirms(channel: Any) -> _Confirms | None:
    """The confirms of ``channel`` if it is a py-amqp channel in confirm mode whose every
    confirm this module has seen (it selected confirms itself, listening first);
    ``None`` otherwise."""
    publish_confirm = getattr(channel, "basic_publish_confirm", None)
    if publish_confirm is None or channel.basic_publish != publish_confirm:
        return None  # not py-amqp, or not in confirm mode: kombu's way
    confirms = channel.__dict__.get("_scheduling_confirms")
    if confirms is None or confirms.ack not in channel.events["basic_ack"]:
        if channel._confirm_selected:
            return None  # confirmed publishes this module did not count: one at a time
        confirms = channel.__dict__["_scheduling_confirms"] = _Confirms()
        channel.events["basic_ack"].add(confirms.ack)
        channel.events["basic_nack"].add(confirms.nack)
        reopen = channel._do_revive  # after a channel error: the same object, reopened

        def reopened() -> None:
            confirms.restart()
            reopen()

        channel._do_revive = reopened
    if not channel._confirm_selected:  # new, or reopened since (tags restart from 1)
        channel._confirm_selected = True
        channel.confirm_select()
    return confirms


def _publish_confirmed_together(
    producer: Any, channel: Any, confirms: _Confirms, messages: Sequence[Outgoing]
) -> None:
    """Publish ``messages`` without waiting between them, then wait for all their
    confirms (each read bounded by the connection's read timeout, as kombu's own wait)."""
    from amqp import spec

    first = confirms.highest + 1  # none is outstanding: every earlier publish was settled
    confirms.outstanding = set(range(first, first + len(messages)))
    confirms.nacked = False
    channel.basic_publish = channel._basic_publish  # kombu's publish, without the wait
    try:
        for message in messages:
            _kombu_publish(producer, message)
    finally:
        channel.basic_publish = channel.basic_publish_confirm
    while confirms.outstanding:
        channel.wait([spec.Basic.Ack, spec.Basic.Nack])
    if confirms.nacked:
        raise MessageNacked(f"the broker refused a message of a batch of {len(messages)}")


def redis_pushes_apply(channel: Any, messages: Sequence[Outgoing]) -> bool:
    """Whether ``messages`` may be written straight onto kombu's Redis lists: a kombu
    Redis channel whose client never retries a command by itself (kombu's own condition
    for a pipelined batch), every message to a queue by name (the default exchange) with
    no expiry set on the queue."""
    if getattr(channel, "_q_for_pri", None) is None or not getattr(
        channel, "supports_batch_publish", False
    ):
        return False
    expires = channel._expires or {}
    return all(
        not message.route.exchange and message.route.routing_key not in expires
        for message in messages
    )


def redis_envelope(producer: Any, channel: Any, message: Outgoing) -> tuple[str, str]:
    """The Redis list and the JSON kombu pushes onto it for ``message``: the steps of
    ``Producer.publish``, ``Channel.prepare_message`` and the virtual channel's
    ``basic_publish`` (``_inplace_augment_message``), in kombu's order."""
    route = message.route
    properties = dict(message.properties)
    priority = properties.pop("priority", 0)
    expiration = properties.pop("expiration", None)
    properties["delivery_mode"] = producer._delivery_details(route.exchange, route.delivery_mode)[1]
    if expiration is not None:
        properties["expiration"] = str(int(expiration * 1000))
    properties["delivery_info"] = {}
    properties["priority"] = priority or channel.default_priority
    body, body_encoding = channel.encode_body(message.body, channel.body_encoding)
    properties["body_encoding"] = body_encoding
    properties["delivery_tag"] = delivery_tag()
    properties["delivery_info"].update(exchange=route.exchange, routing_key=route.routing_key)
    envelope = {
        "body": body,
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers or {},
        "properties": properties,
    }
    key = channel._q_for_pri(
        route.routing_key, channel._get_message_priority(envelope, reverse=False)
    )
    return key, json_dumps(envelope)


def _push_to_redis(producer: Any, channel: Any, messages: Sequence[Outgoing]) -> None:
    """One pipelined round trip: an ``LPUSH`` per list, its messages in the batch's order."""
    lists: dict[str, list[str]] = {}
    for message in messages:
        key, payload = redis_envelope(producer, channel, message)
        lists.setdefault(key, []).append(payload)
    with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        for key, payloads in lists.items():
            pipe.lpush(key, *payloads)
        pipe.execute()
