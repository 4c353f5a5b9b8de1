"""Helper threads that leave every signal to the process's main thread.

The kernel delivers a signal sent to a process to any one of its threads that does not
block it. Python runs its handlers in the main thread whichever thread took the signal,
but two things depend on which one did: a signal whose action is the default (terminate)
takes effect at once, and only the thread that took it sees its blocking call interrupted.

billiard relies on the first. A pool process that is leaving (over its hard time limit,
say) blocks SIGTERM in its main thread while it writes its last message to the result
queue its siblings share, and the parent sends SIGTERM as soon as that message arrives:
dying while it holds the queue's lock would leave the lock held and every other pool
process stuck behind it. A helper thread that does not block SIGTERM takes the signal
instead (the kernel hands it to any thread that accepts it), and the process dies holding
the lock: a worker on the embedded broker (billiard's threaded pool, one result queue for
all processes) then takes no more runs. So every thread this app starts in a worker
blocks every signal it can from its first instruction on.
"""

import signal
import threading
from collections.abc import Callable


def start_daemon_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start ``target`` in a daemon thread that blocks every signal (it inherits the mask
    it is created with, so the caller's mask is set around the start and restored)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
