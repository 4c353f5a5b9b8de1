#!/usr/bin/env python3
"""Run the processes of a Procfile together, none of them longer than this runner.

``scripts/run``'s process manager. honcho, used before, starts each process in a session
of its own, so after a hard kill of the runner (``kill -9``, a closed terminal whose
signal it never saw) they went on: a worker consumed for 20 minutes more. Here:

- every process stays in the runner's process group (the runner makes one of its own
  when it is not already a group's leader, so it never takes its caller's group down);
- a *watchdog*, forked first, waits on a pipe only the runner holds. The kernel closes
  it however the runner ends, kill -9 included; the watchdog then sends SIGTERM to the
  whole group, SIGKILL to what is left after ``--grace`` seconds, and exits. It lives in
  a session of its own, so it is outside the group it stops and a Ctrl-C does not reach
  it, and it keeps the caller's lock file descriptor (``scripts/run``'s ``flock`` on
  ``var/run.lock``), so a second runner is refused until the last process has stopped;
- the first process to exit stops the others, as honcho and foreman do; Ctrl-C, SIGTERM
  or SIGHUP stops them all the same way (SIGTERM, then SIGKILL after ``--grace``).

Each output line is prefixed with the time and the process name.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def procfile_entries(path: Path) -> list[tuple[str, str]]:
    """``(name, command)`` of each ``name: command`` line (blank lines and ``#`` skipped)."""
    entries = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        match = LINE.match(text.strip())
        if match is None:
            sys.exit(f"{path}:{number}: not a 'name: command' line: {text!r}")
        entries.append((match[1], match[2]))
    return entries


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. A zombie does not count: once the
    runner is gone its children's zombies wait for whoever adopts them, and the runner's
    own for its caller, who may not wait at once."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM to every process of group ``pgid``; SIGKILL to those left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)


def watchdog(read_end: int, pgid: int, grace: float) -> None:
    """In the forked watchdog: wait until the runner is gone, then stop its group."""
    os.setsid()
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        while os.read(read_end, 1024):
            pass
        stop_group(pgid, grace)
    finally:
        os._exit(0)


class Runner:
    """The Procfile's processes, their output, and stopping them together."""

    def __init__(self, entries: list[tuple[str, str]], grace: float) -> None:
        self.entries = entries
        self.grace = grace
        self.procs: dict[str, subprocess.Popen] = {}
        self.width = max(len(name) for name, _ in entries)
        self.print_lock = threading.Lock()
        self.stopping = threading.Event()

    def say(self, name: str, text: str) -> None:
        with self.print_lock:
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            sys.stdout.flush()

    def _relay(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode(errors="replace").rstrip("\n"))

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name, command in self.entries:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
            self.procs[name] = proc
            self.say("runner", f"started {name} (pid {proc.pid}): {command}")
            threading.Thread(target=self._relay, args=(name, proc.stdout), daemon=True).start()

    def stop(self, why: str) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._terminate(why)

    def _terminate(self, why: str) -> None:
        self.say("runner", f"{why}: stopping every process")
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            time.sleep(0.1)
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.say("runner", f"{name} still running after {self.grace:g}s: killed")
                proc.kill()
                proc.wait()

    def run(self) -> int:
        def on_signal(signum, _frame):
            if not self.stopping.is_set():
                # Set at once: a process the same Ctrl-C stopped is not taken for a crash.
                self.stopping.set()
                name = signal.Signals(signum).name
                threading.Thread(target=self._terminate, args=(name,), daemon=True).start()

        for sig in STOP_SIGNALS:
            signal.signal(sig, on_signal)
        self.start()
        code = 0
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None and not self.stopping.is_set():
                    code = proc.returncode or 0
                    self.stop(f"{name} exited with code {proc.returncode}")
            if self.stopping.is_set() and all(p.poll() is not None for p in self.procs.values()):
                return code
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--procfile", default="Procfile", type=Path)
    parser.add_argument(
        "--grace", type=float, default=20.0, help="seconds between SIGTERM and SIGKILL"
    )
    options = parser.parse_args()
    entries = procfile_entries(options.procfile)
    if not entries:
        sys.exit(f"{options.procfile}: no processes")
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)  # a group of its own, never the caller's
    pgid = os.getpgrp()
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(write_end)
        watchdog(read_end, pgid, options.grace)
    os.close(read_end)
    return Runner(entries, options.grace).run()


if __name__ == "__main__":
    sys.exit(main())
