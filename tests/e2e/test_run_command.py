"""``scripts/run``: one per ``var/``, and none of its processes outlives it (kill -9 too)."""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Run:
    """One ``scripts/run`` process, its output collected line by line."""

    def __init__(self, var: Path, args: tuple = (), env: dict | None = None) -> None:
        base = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "CELERY_BROKER_URL"}  # the embedded default
        }
        base.update(
            VAR_DIR=str(var),
            RUN_SKIP_INSTALL="1",
            WEB_PORT=str(free_port()),
            FLOWER_PORT=str(free_port()),
            WORKER_CONCURRENCY="1",
            ADMIN_PASSWORD="run-test-password",
            PATH=f"{ROOT / '.venv' / 'bin'}:{base['PATH']}",
            **(env or {}),
        )
        self.env = base
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(ROOT / "scripts" / "run"), *args],
            cwd=ROOT,
            env=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in the output:\n" + "\n".join(self.lines[-60:]))


@pytest.fixture
def runs(tmp_path):
    started: list[Run] = []
    yield lambda: started.append(Run(tmp_path / "var")) or started[-1]
    for run in started:  # whatever a failed test left
        for pid in descendants(run.proc.pid) | {run.proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_second_run_on_the_same_var_refuses_and_a_kill_9_leaves_no_process(runs):
    first = runs()
    first.wait_for("ready.")  # the worker consumes
    processes = descendants(first.proc.pid)
    assert len(processes) >= 5  # watchdog, web, beat, worker (+ its pool process), flower

    second = runs()
    assert second.proc.wait(timeout=30) == 1
    time.sleep(0.5)
    assert "scripts/run is already running on" in second.lines[-1]
    assert f"(pid {first.proc.pid})" in second.lines[-1]
    assert descendants(first.proc.pid) == processes  # no second worker, nothing restarted

    os.kill(first.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < 30 and any(alive(pid) for pid in processes):
        time.sleep(0.2)
    print(f"every process gone {time.monotonic() - killed_at:.1f} s after the kill -9")
    left = [pid for pid in processes if alive(pid)]
    assert left == [], f"still running after the runner's kill -9: {left}"

    third = runs()  # the lock went with the last process
    third.wait_for("ready.")
    third.proc.send_signal(signal.SIGTERM)
    assert third.proc.wait(timeout=30) == 0
    assert [pid for pid in descendants(third.proc.pid) if alive(pid)] == []


def test_ctrl_c_stops_every_process(runs):
    run = runs()
    run.wait_for("ready.")
    processes = descendants(run.proc.pid)
    os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    run.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(pid) for pid in processes):
        time.sleep(0.2)
    assert [pid for pid in processes if alive(pid)] == []
    assert any("SIGINT: stopping every process" in line for line in run.lines)
