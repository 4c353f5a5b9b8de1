"""The app's helper threads leave signals to the main thread (see ``scheduling.threads``).

A worker's pool process blocks SIGTERM in its main thread while it writes to the result
queue its siblings share; a helper thread that did not block it would take the signal
and kill the process holding the queue's lock (on the embedded broker the worker then
stopped taking runs). The masks are read from the kernel (``/proc``), per thread.
"""

import signal
import sys
import threading
from pathlib import Path

import pytest

from scheduling import threads
from scheduling.runs import lease

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads each thread's signal mask in /proc"
)

EXPECTED = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP}


def blocked_signals(native_id: int) -> set[int]:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    mask = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16
    )
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


def test_a_helper_thread_blocks_every_termination_signal_and_the_caller_keeps_its_mask():
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    started, release = threading.Event(), threading.Event()

    def target() -> None:
        started.set()
        release.wait(10)

    thread = threads.start_daemon_thread(target, "probe")
    try:
        assert started.wait(10)
        assert thread.daemon and thread.name == "probe"
        assert blocked_signals(thread.native_id) >= EXPECTED
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        assert not EXPECTED & blocked_signals(threading.main_thread().native_id)
    finally:
        release.set()
        thread.join(10)


def test_the_lease_renewer_of_a_pool_process_does_not_take_its_signals():
    renewer = lease.LeaseRenewer()
    renewer.add(1)
    renewer.discard(1)  # nothing to renew: the thread never touches the database
    assert renewer._thread.is_alive()
    assert blocked_signals(renewer._thread.native_id) >= EXPECTED
