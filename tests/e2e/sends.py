"""What a beat of the failover tests publishes, and when (imported by those beats only,
through ``SCHEDULING_EXTRA_JOB_MODULES``).

Each message a beat has published is one line of ``VAR_DIR/sends-<pid>``: the wall-clock
time the publish of its batch began, the job id and the fire time. With
``TEST_PUBLISH_SECONDS`` the broker is slow to answer: each batch (each message, for a
run sent alone) returns that much later (the messages are out, the beat waits, as it does
for a slow broker's reply). Read by
:func:`tests.e2e.test_failover.sends`; the test process never imports this module.
"""

import json
import os
import time
from pathlib import Path

from django.conf import settings

from scheduling import publish, services

_dispatch = services.job_dispatch
_publish = publish.messages_publish
_answer_after = float(os.environ.get("TEST_PUBLISH_SECONDS", "0"))


def _log(began: float, sent: list[tuple[int, str]]) -> None:
    with (Path(settings.VAR_DIR) / f"sends-{os.getpid()}").open("a") as log:
        log.writelines(f"{began:.3f} {job_id} {fire}\n" for job_id, fire in sent)


def _job_dispatch(**kwargs):
    began = time.time()
    result = _dispatch(**kwargs)
    _log(began, [(kwargs["job"].pk, kwargs["scheduled_at"].isoformat())])
    time.sleep(_answer_after)
    return result


def _messages_publish(producer, messages, **kwargs):
    began = time.time()
    _publish(producer, messages, **kwargs)
    runs = [json.loads(message.body)[1] for message in messages]
    _log(began, [(run["job_id"], run["scheduled_at"]) for run in runs])
    time.sleep(_answer_after)


services.job_dispatch = _job_dispatch
publish.messages_publish = _messages_publish
