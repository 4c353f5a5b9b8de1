"""What a beat of the failover tests publishes, and when (imported by those beats only,
through ``SCHEDULING_EXTRA_JOB_MODULES``).

Each message a beat has published is one line of ``VAR_DIR/sends-<pid>``: the wall-clock
time the publish began, the job id and the fire time. With ``TEST_PUBLISH_SECONDS`` the
broker is slow to answer: each publish returns that much later (the message is out, the
beat waits, as it does for a slow broker's reply). Read by
:func:`tests.e2e.test_failover.sends`; the test process never imports this module.
"""

import os
import time
from pathlib import Path

from django.conf import settings

from scheduling import services

_publish = services.job_dispatch
_answer_after = float(os.environ.get("TEST_PUBLISH_SECONDS", "0"))


def _job_dispatch(**kwargs):
    began = time.time()
    result = _publish(**kwargs)
    with (Path(settings.VAR_DIR) / f"sends-{os.getpid()}").open("a") as log:
        log.write(f"{began:.3f} {kwargs['job'].pk} {kwargs['scheduled_at'].isoformat()}\n")
    time.sleep(_answer_after)
    return result


services.job_dispatch = _job_dispatch
