"""Soak: hours of runs through real beats and workers, with kills and a database restart.

The soak starts its own PostgreSQL server (``initdb`` into a temporary directory, a free
port, trust authentication) and its own Redis server, so that restarting them disturbs
nobody else on the machine; it removes both when it ends, also on Ctrl-C or a failure.
On them it runs the product's real processes: two ``celery -A project beat`` with our
``JobScheduler`` and two ``celery -A project worker`` (prefork, ``--concurrency`` 4
processes each: a run mostly waits for PostgreSQL's commits, so on 2 cores 4 processes
a worker carry more than 2), with DEBUG off and warning logs, as in production. The
jobs: ``--rate`` jobs firing every second (half a cron with seconds, ``* * * * * *``, all
on the whole second; half an interval of 1 s, their anchors spread over the second), all
running ``soak.tick`` (``benchmarks/soak_tasks.py``), which notes each call.

Timeline: start-up; a warm-up (``--warm-up``, 30 s) in which everything runs and nothing
is counted; the window of ``--duration`` seconds; then beats and workers keep running,
with no more faults, until every fire time of the window has a settled record (at least
the misfire grace + beat's ledger margin, and a lost run's lease + reaping interval).
In the window, every ``--kill-every`` seconds (at most a quarter of the window, so a short
run has them all; each moment moved at random by up to a quarter of the gap) one process
is killed with SIGKILL (its whole process group, a worker's pool processes too) and started
again 5 s later: the first a beat, the leader (so a standby must take over), the second a
worker, then a beat or a worker at random. Worker kills hit ``worker-2``: ``worker-1``
lives through the whole run, so its memory shows a leak over the whole window. Halfway
through, PostgreSQL is stopped (fast shutdown, every session cut), kept down 5 s and
started again.

**The window** is [since, until], both ends included, ``since`` the end of the warm-up on
a whole second, ``until`` = since + duration; a fire time outside it is not counted, and
its runs do not count as duplicates of one inside it. Every process is running across both
ends, so neither edge is special.

**The figures**, from the product's records (``JobExecution``, first attempts) and the
calls ``soak.tick`` noted:

- *expected*: every fire time of every job in the window (from the job's trigger);
- *recorded*: fire times with a record of their fate, by outcome;
- *duplicated*: fire times of a job with more than one record, or whose function was
  called more than once (which includes one message run twice);
- *unexplained*: fire times with no record, or still *running* once settled, or whose
  record disagrees with itself (``tests/e2e/fates.py``: say, missed as late yet started in
  time), or whose function was called while the record says it did not run (missed,
  skipped), or not called while the record says it succeeded;
- *lateness*: started_at - scheduled_at of the runs that ran: p50, p99, max;
- *CPU*: user + system time of the beats and workers (pool processes included) in the
  window, per run that ran;
- *memory*: RSS of each beat and worker process (a worker: its main process + its pool
  processes) once warmed up (at ``since``; a restarted one ``--warm-up`` after its start)
  and at its end (just before it is killed, or at the end of the run). A process that
  lived at least 60 s after its warm-up must not have grown by more than
  ``MEMORY_BOUND_MB``.

Exit status 0 when duplicated and unexplained are 0, memory stayed within the bound,
every kind of fault happened, and at least ``--min-ran`` (90 %) of the fire times ran
(a soak in which everything was missed proves nothing); 1 otherwise.

    ./scripts/soak [--duration 3600] [--rate 100] [--kill-every 180] [--json]

Needs PostgreSQL's server binaries (``/usr/lib/postgresql/*/bin``, or ``$SOAK_PG_BIN``) and
``redis-server``. Logs and call files are kept in ``var/soak/`` (``--keep`` keeps the
servers' data too).
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "var" / "soak"
PG_DOWN = 5.0  # seconds PostgreSQL stays stopped
RESTART_DELAY = 5.0  # seconds between a kill and the process's new start
SAMPLE_EVERY = 5.0  # seconds between memory samples
MEMORY_BOUND_MB = 20.0  # most a process (a worker with its pool) may grow after warm-up
MEMORY_MIN_LIFE = 60.0  # seconds after warm-up a process must live for the bound to apply
SETTLE_CAP = 300.0  # longest wait after the window for every fire time to settle
START_CAP = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return result


def pg_bin() -> Path | None:
    if os.environ.get("SOAK_PG_BIN"):
        return Path(os.environ["SOAK_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


# --- the soak's own servers ---------------------------------------------------------------


class Servers:
    """A PostgreSQL and a Redis server of the soak's own, in a temporary directory."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="soak-"))
        self.pg_data = self.dir / "pg"
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.redis: subprocess.Popen | None = None
        self.pg_started = False
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.pg_port}/soak"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self) -> None:
        if self.bin is None or not (self.bin / "initdb").exists():
            raise RuntimeError("PostgreSQL server binaries not found (set SOAK_PG_BIN)")
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server not found")
        self.dir.chmod(0o755)
        self.pg_data.mkdir()
        if self.as_user:
            user = pwd.getpwnam("postgres")
            os.chown(self.pg_data, user.pw_uid, user.pw_gid)
        subprocess.run(
            [*self.as_user, self.bin / "initdb", "-D", self.pg_data, "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        with (self.pg_data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.pg_port}\n"
                f"unix_socket_directories = '{self.pg_data}'\nmax_connections = 200\n"
            )
        self.pg_start()
        subprocess.run(
            [*self.as_user, self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.pg_port),
             "-U", "postgres", "soak"],
            check=True,
        )  # fmt: skip
        redis_dir = self.dir / "redis"
        redis_dir.mkdir()
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
             "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
            stdout=(self.dir / "redis.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait(lambda: port_open(self.redis_port), 30, "Redis to listen")

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, self.bin / "pg_ctl", "-D", self.pg_data, "-w", "-t", "60",
             "-l", self.pg_data / "postgres.log", *args],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def pg_start(self) -> None:
        self._pg_ctl("start")
        self.pg_started = True

    def pg_stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")
        self.pg_started = False

    def pg_version(self) -> str:
        out = subprocess.run([self.bin / "postgres", "--version"], capture_output=True, text=True)
        return out.stdout.strip().rsplit(" ", 1)[-1]

    def redis_version(self) -> str:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return next((w[2:] for w in out.stdout.split() if w.startswith("v=")), "?")

    def stop(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.redis.wait(10)
            if self.redis.poll() is None:
                self.redis.kill()
        if self.pg_started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("stop", "-m", "immediate")
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- beats and workers --------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Instance:
    """One life of a beat or worker process: from its start to its kill or the end."""

    def __init__(self, slot: str, number: int, proc: subprocess.Popen, warm_at: float) -> None:
        self.slot, self.number, self.proc = slot, number, proc
        self.started = time.monotonic()
        self.warm_at = warm_at  # monotonic time from which its memory counts
        self.warm_rss: tuple[int, int] | None = None  # (main kB, pool processes kB)
        self.end_rss: tuple[int, int] | None = None
        self.ended: float | None = None
        self.end = "running"
        self.pool = 0  # pool processes it had when it was killed
        self.cpu_from = 0.0  # CPU seconds (main + pool) at the window's start or its own
        self.cpu_to = 0.0  # and at its end

    @property
    def label(self) -> str:
        return f"{self.slot} #{self.number}"

    def sample(self) -> tuple[int, int]:
        pid = self.proc.pid
        return rss_kb(pid), sum(rss_kb(c) for c in children(pid))

    def cpu(self) -> float:
        pid = self.proc.pid
        return cpu_seconds(pid) + sum(cpu_seconds(c) for c in children(pid))


class Fleet:
    """The soak's beats and workers, started, killed and restarted as OS processes."""

    SLOTS = ("beat-1", "beat-2", "worker-1", "worker-2")

    def __init__(
        self, env: dict[str, str], log_dir: Path, warm_up: float, concurrency: int
    ) -> None:
        self.env, self.log_dir, self.warm_up = env, log_dir, warm_up
        self.concurrency = concurrency
        self.current: dict[str, Instance] = {}
        self.history: list[Instance] = []
        self.lock = threading.Lock()

    def start(self, slot: str, warm_at: float | None = None) -> Instance:
        number = sum(1 for i in self.history if i.slot == slot) + 1
        if slot.startswith("beat"):
            args = ["beat", "-l", "warning", "--pidfile="]
        else:
            args = ["worker", "-l", "warning", "-c", str(self.concurrency), "-P", "prefork", "-n", f"{slot}@soak",
                    "--without-mingle", "--without-gossip"]  # fmt: skip
        log = (self.log_dir / f"{slot}.{number}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "project", *args],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        when = warm_at if warm_at is not None else time.monotonic() + self.warm_up
        instance = Instance(slot, number, proc, when)
        with self.lock:
            self.current[slot] = instance
            self.history.append(instance)
        return instance

    def kill(self, slot: str) -> Instance:
        """SIGKILL ``slot``'s whole process group (a worker's pool processes too)."""
        with self.lock:
            instance = self.current.pop(slot)
        instance.pool = len(children(instance.proc.pid))
        self._end(instance, "killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(instance.proc.pid, signal.SIGKILL)
        instance.proc.wait(30)
        return instance

    def _end(self, instance: Instance, how: str) -> None:
        instance.cpu_to = instance.cpu() or instance.cpu_to
        rss = instance.sample()
        if rss[0]:
            instance.end_rss = rss
        instance.ended, instance.end = time.monotonic(), how

    def sample(self) -> list[str]:
        """Note each process's memory once it is warm; return the slots that died."""
        dead = []
        with self.lock:
            instances = list(self.current.values())
        now = time.monotonic()
        for instance in instances:
            if instance.proc.poll() is not None:
                dead.append(instance.slot)
                continue
            if instance.warm_rss is None and now >= instance.warm_at:
                instance.warm_rss = instance.sample()
            instance.cpu_to = instance.cpu() or instance.cpu_to
        return dead

    def beat_pid_of(self, holder: str) -> str | None:
        pid = holder.rsplit(":", 1)[-1]
        with self.lock:
            for slot, instance in self.current.items():
                if slot.startswith("beat") and str(instance.proc.pid) == pid:
                    return slot
        return None

    def stop_all(self) -> None:
        with self.lock:
            instances = list(self.current.values())
            self.current.clear()
        for instance in instances:
            if instance.proc.poll() is None:
                self._end(instance, "stopped at the end")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(instance.proc.pid, signal.SIGTERM)
        for instance in instances:
            try:
                instance.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(instance.proc.pid, signal.SIGKILL)
                instance.proc.wait(10)

    def kill_all(self) -> None:
        """On a failure or Ctrl-C: no warm shutdown."""
        with self.lock:
            instances = list(self.current.values())
            self.current.clear()
        for instance in instances:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(instance.proc.pid, signal.SIGKILL)


# --- faults ---------------------------------------------------------------------------------


def fault_plan(duration: float, kill_every: float, rng: random.Random) -> list[tuple[float, str]]:
    """(offset into the window, fault) for the whole window: kills, and one PG restart."""
    gap = min(kill_every, duration / 4)
    plan, k = [], 1
    while k * gap < duration - gap / 4:
        kind = "beat" if k == 1 else "worker" if k == 2 else rng.choice(["beat", "worker"])
        plan.append((k * gap + rng.uniform(-gap / 4, gap / 4), kind))
        k += 1
    # The restart goes near the middle, as far from every kill as it can be.
    plan.append((_furthest(plan, duration, gap), "postgres"))
    return sorted(plan)


def _furthest(plan: list[tuple[float, str]], duration: float, gap: float) -> float:
    """The moment near the window's middle that is furthest from every kill."""
    kills = [t for t, kind in plan if kind != "postgres"]
    candidates = [duration / 2 + d for d in (-gap / 2, -gap / 4, 0, gap / 4, gap / 2)]
    return max(candidates, key=lambda c: min((abs(c - t) for t in kills), default=gap))


class Faults:
    """Carries out the fault plan and notes what each fault did."""

    def __init__(self, fleet: Fleet, servers: Servers, rng: random.Random) -> None:
        self.fleet, self.servers, self.rng = fleet, servers, rng
        self.log: list[dict[str, Any]] = []
        self.pending_restarts: list[tuple[float, str]] = []

    def leader(self) -> str | None:
        from django.db import close_old_connections
        from django.utils import timezone

        from scheduling.models import SchedulerLease

        close_old_connections()
        try:
            lease = SchedulerLease.objects.filter(expires_at__gt=timezone.now()).first()
        except Exception:
            from django.db import connection

            connection.close()
            return None
        return lease and lease.holder and self.fleet.beat_pid_of(lease.holder)

    def inject(self, kind: str, at: float) -> None:
        entry: dict[str, Any] = {"at": round(at, 1), "fault": kind}
        if kind == "postgres":
            from django.db import connection

            connection.close()
            started = time.monotonic()
            self.servers.pg_stop()
            stopped = time.monotonic()
            time.sleep(PG_DOWN)
            self.servers.pg_start()
            entry["what"] = (
                f"PostgreSQL restart (fast shutdown in {stopped - started:.1f} s, "
                f"down {time.monotonic() - stopped:.1f} s)"
            )
        elif kind == "beat":
            slot = self.leader() or self.rng.choice(
                [s for s in self.fleet.current if s.startswith("beat")]
            )
            instance = self.fleet.kill(slot)
            killed_at = time.monotonic()
            entry["what"] = f"kill -9 {slot} (the leader, pid {instance.proc.pid})"
            try:
                new = wait(lambda: self.leader(), 60, "a standby to take over", interval=0.25)
                entry["what"] += f"; {new} took over after {time.monotonic() - killed_at:.1f} s"
            except RuntimeError:
                entry["what"] += "; no beat took over within 60 s"
                entry["problem"] = True
            self.pending_restarts.append((killed_at + RESTART_DELAY, slot))
        else:
            slot = "worker-2"
            instance = self.fleet.kill(slot)
            entry["what"] = (
                f"kill -9 {slot} (pid {instance.proc.pid} and its {instance.pool} pool processes)"
            )
            self.pending_restarts.append((time.monotonic() + RESTART_DELAY, slot))
        self.log.append(entry)

    def restart_due(self) -> None:
        now = time.monotonic()
        for due, slot in list(self.pending_restarts):
            if due <= now:
                self.pending_restarts.remove((due, slot))
                self.fleet.start(slot)


# --- accounting -----------------------------------------------------------------------------


def read_calls(calls_dir: Path) -> dict[tuple[int, dt.datetime], list[str]]:
    """The message ids soak.tick was called with, by (job id, fire time)."""
    calls: dict[tuple[int, dt.datetime], list[str]] = {}
    for path in calls_dir.glob("calls-*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[1] == "None":
                continue
            job_id, fire, message = parts
            calls.setdefault((int(job_id), dt.datetime.fromisoformat(fire)), []).append(message)
    return calls


def progress(since: dt.datetime, last: dt.datetime, redis_url: str) -> str:
    """Runs started since ``last``, their lateness, and the messages waiting in Redis."""
    import redis
    from django.db import close_old_connections
    from django.utils import timezone

    from scheduling.models import JobExecution

    close_old_connections()
    now = timezone.now()
    try:
        late = sorted(
            (s - f).total_seconds()
            for s, f in JobExecution.objects.filter(
                trigger="schedule", started_at__gt=last, started_at__lte=now, status="success"
            ).values_list("started_at", "scheduled_at")
        )
        client = redis.Redis.from_url(redis_url, socket_timeout=2)
        waiting = sum(client.llen(k) for k in client.scan_iter(match="celery*", count=1000))
    except Exception as exc:
        return f"({type(exc).__name__}: {exc})".splitlines()[0]
    span = (now - last).total_seconds()
    p99 = f"{percentile(late, 99) * 1000:.0f} ms" if late else "-"
    return f"{len(late) / span:5.1f} runs/s, p99 late {p99:>8}, {waiting:>5} messages waiting"


def unsettled(jobs, since: dt.datetime, until: dt.datetime, expected: int) -> int:
    """Fire times of the window without a settled record (cheap: one count)."""
    from django.db import close_old_connections

    from scheduling.models import JobExecution

    close_old_connections()
    done = (
        JobExecution.objects.filter(
            job__in=jobs, trigger="schedule", attempt=0, scheduled_at__range=(since, until)
        )
        .exclude(status="running")
        .count()
    )
    return max(expected - done, 0)


def account(jobs, since: dt.datetime, until: dt.datetime, calls_dir: Path) -> dict[str, Any]:
    from tests.e2e.fates import RAN, fire_times, problems, recorded

    all_calls = read_calls(calls_dir)
    expected = recorded_count = calls_in_window = messages_twice = 0
    outcomes: Counter = Counter()
    duplicated, no_row, running, inconsistent = [], [], [], []
    lateness: list[float] = []
    for job in jobs:
        job.refresh_from_db()
        by_time = recorded(job, since, until)
        expected += len(fire_times(job, since, until))
        settled = []
        for fire, rows in by_time.items():
            messages = all_calls.get((job.pk, fire), [])
            calls = len(messages)
            calls_in_window += calls
            messages_twice += sum(1 for n in Counter(messages).values() if n > 1)
            where = f"{job.name} {fire.isoformat()}"
            if len(rows) > 1 or calls > 1:
                statuses = ", ".join(r.status for r in rows)
                duplicated.append(f"{where}: {len(rows)} rows ({statuses}), {calls} calls")
            if not rows:
                no_row.append(f"{where}: no row ({calls} calls)")
                continue
            recorded_count += 1
            row = rows[0]
            outcomes[row.status] += 1
            if row.status == "running":
                running.append(f"{where}: still running ({row.worker}, lease {row.lease_until})")
                continue
            settled.append(row)
            if row.status in RAN:
                lateness.append((row.started_at - row.scheduled_at).total_seconds())
            if row.status in ("missed", "skipped") and calls:
                inconsistent.append(f"{where}: {row.status} ({row.reason!r}) but called {calls}x")
            if row.status == "success" and not calls:
                inconsistent.append(f"{where}: success but the function was never called")
        inconsistent += [f"{job.name} {p}" for p in problems(job, settled)]
    lateness.sort()
    return {
        "expected": expected,
        "recorded": recorded_count,
        "outcomes": dict(sorted(outcomes.items())),
        "calls": calls_in_window,
        "duplicated": len(duplicated),
        "duplicated_examples": duplicated[:10],
        "messages_run_twice": messages_twice,
        "unexplained": len(no_row) + len(running) + len(inconsistent),
        "no_record": len(no_row),
        "still_running": len(running),
        "inconsistent": len(inconsistent),
        "unexplained_examples": (no_row + running + inconsistent)[:10],
        "lateness_ms": {
            "runs": len(lateness),
            "p50": round(1000 * percentile(lateness, 50), 1) if lateness else None,
            "p99": round(1000 * percentile(lateness, 99), 1) if lateness else None,
            "max": round(1000 * lateness[-1], 1) if lateness else None,
        },
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, min(len(values), round(p / 100 * len(values) + 0.5)))
    return values[rank - 1]


def memory_report(fleet: Fleet) -> tuple[list[dict[str, Any]], list[str]]:
    lines, over = [], []
    for instance in fleet.history:
        warm, end = instance.warm_rss, instance.end_rss
        lived = (instance.ended or time.monotonic()) - instance.warm_at
        entry: dict[str, Any] = {
            "process": instance.label,
            "pid": instance.proc.pid,
            "end": instance.end,
            "lived_after_warm_up_s": round(max(lived, 0)),
            "warm_mb": warm and _mb(warm),
            "end_mb": end and _mb(end),
            "cpu_s": round(max(instance.cpu_to - instance.cpu_from, 0), 1),
        }
        if warm and end:
            growth = (sum(end) - sum(warm)) / 1024
            entry["growth_mb"] = round(growth, 1)
            entry["checked"] = lived >= MEMORY_MIN_LIFE
            if entry["checked"] and growth > MEMORY_BOUND_MB:
                over.append(f"{instance.label} grew {growth:.1f} MB")
        lines.append(entry)
    return lines, over


def _mb(rss: tuple[int, int]) -> dict[str, float]:
    main, pool = rss
    return {"main": round(main / 1024, 1), "pool": round(pool / 1024, 1)}


# --- the run ----------------------------------------------------------------------------------


def create_jobs(rate: int) -> list:
    from scheduling import services

    jobs = []
    cron, interval = rate - rate // 2, rate // 2
    for i in range(cron):
        jobs.append(
            services.job_register_cron(
                name=f"soak-cron-{i:03d}", task="soak.tick", expression="* * * * * *"
            )
        )
    for i in range(interval):
        # Spread the intervals' anchors (their creation times) over a second.
        time.sleep(1 / max(interval, 1))
        jobs.append(
            services.job_register_interval(
                name=f"soak-interval-{i:03d}", task="soak.tick", every=1, period="seconds"
            )
        )
    return jobs


def say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, flush=True)


def run(args: argparse.Namespace, servers: Servers, fleet_holder: list) -> dict[str, Any]:
    quiet = args.json
    rng = random.Random(args.seed)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_dir = OUT_DIR / "logs"
    calls_dir = OUT_DIR / "calls"
    for d in (log_dir, calls_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    say(f"starting PostgreSQL (port {servers.pg_port}) and Redis (port {servers.redis_port}) "
        f"in {servers.dir}", quiet)  # fmt: skip
    servers.start()
    os.environ.update(
        DATABASE_URL=servers.database_url,
        CELERY_BROKER_URL=servers.redis_url,
        SCHEDULING_EXTRA_JOB_MODULES="benchmarks.soak_tasks",
        SOAK_CALLS_DIR=str(calls_dir),
        VAR_DIR=str(OUT_DIR / "var"),
        PYTHONUNBUFFERED="1",
        C_FORCE_ROOT="1",
        # As in production: with DEBUG on, Django keeps every query of a connection in
        # memory (Celery warns that it leaks) and the soak would measure that.
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import logging

    import django

    django.setup()
    logging.getLogger("scheduling").setLevel(logging.WARNING)
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    jobs = create_jobs(args.rate)
    say(f"{len(jobs)} jobs every second; starting 2 beats and 2 workers", quiet)

    fleet = Fleet(dict(os.environ), log_dir, args.warm_up, args.concurrency)
    fleet_holder.append(fleet)
    launched = time.monotonic()
    for slot in Fleet.SLOTS:
        fleet.start(slot, warm_at=float("inf"))
    from scheduling.models import JobExecution

    wait(
        lambda: JobExecution.objects.filter(status="success").exists() or fleet.sample(),
        START_CAP,
        "the first run",
    )
    if dead := fleet.sample():
        raise RuntimeError(f"{', '.join(dead)} exited at start; see {log_dir}")
    say(f"first run {time.monotonic() - launched:.1f} s after launch; warming up "
        f"{args.warm_up:.0f} s", quiet)  # fmt: skip
    time.sleep(args.warm_up)
    now = timezone.now()
    since = now.replace(microsecond=0) + dt.timedelta(seconds=1)
    time.sleep((since - now).total_seconds())
    window_start = time.monotonic()
    for instance in fleet.current.values():
        instance.warm_at = window_start
        instance.cpu_from = instance.cpu()
    fleet.sample()
    until = since + dt.timedelta(seconds=args.duration)
    plan = [] if args.no_faults else fault_plan(args.duration, args.kill_every, rng)
    say(f"window {since:%H:%M:%S} .. {until:%H:%M:%S} UTC; faults planned at "
        + ", ".join(f"+{t:.0f} s {k}" for t, k in plan), quiet)  # fmt: skip

    faults = Faults(fleet, servers, rng)
    unexpected: list[str] = []
    next_sample = 0.0
    every = min(60.0, max(10.0, args.duration / 12))
    next_progress, last_progress = every, timezone.now()
    while True:
        offset = time.monotonic() - window_start
        if offset >= args.duration:
            break
        if plan and plan[0][0] <= offset:
            _, kind = plan.pop(0)
            faults.inject(kind, offset)
            say(f"  +{faults.log[-1]['at']:6.1f} s  {faults.log[-1]['what']}", quiet)
        faults.restart_due()
        if offset >= next_sample:
            for slot in fleet.sample():
                # Died on its own: note it and start it again.
                instance = fleet.current.pop(slot)
                instance.ended, instance.end = time.monotonic(), f"exited {instance.proc.poll()}"
                unexpected.append(f"+{offset:.0f} s {instance.label} exited by itself")
                fleet.start(slot)
            next_sample = offset + SAMPLE_EVERY
        if offset >= next_progress:
            say(f"  +{offset:6.1f} s  {progress(since, last_progress, servers.redis_url)}", quiet)
            next_progress, last_progress = offset + every, timezone.now()
        time.sleep(0.1)
    for instance in list(fleet.current.values()):
        instance.cpu_to = instance.cpu() or instance.cpu_to
    window_cpu = sum(max(i.cpu_to - i.cpu_from, 0) for i in fleet.history)
    window_load = os.getloadavg()[1]  # the machine's, over the last 5 minutes
    # Restarts still pending run now: every process runs through the settling.
    for _, slot in faults.pending_restarts:
        fleet.start(slot)
    faults.pending_restarts.clear()

    from scheduling import conf
    from scheduling.scheduler import LEDGER_MARGIN
    from tests.e2e.fates import fire_times

    grace = max(j.misfire_grace_time for j in jobs)
    settle_min = max(grace + LEDGER_MARGIN, conf.get("LEASE_SECONDS") + conf.get("REAP_INTERVAL"))
    say(f"window over; settling (at least {settle_min:.0f} s)", quiet)
    settle_started = time.monotonic()
    expected_count = sum(len(fire_times(job, since, until)) for job in jobs)
    time.sleep(settle_min + 5)
    with contextlib.suppress(RuntimeError):
        wait(lambda: unsettled(jobs, since, until, expected_count) == 0, SETTLE_CAP, "", 5)
    settle_seconds = time.monotonic() - settle_started
    fleet.sample()
    fleet.stop_all()
    result = account(jobs, since, until, calls_dir)
    memory, over = memory_report(fleet)
    result.update(
        duration_s=args.duration,
        rate=args.rate,
        concurrency=args.concurrency,
        window=[since.isoformat(), until.isoformat()],
        settled_after_s=round(settle_seconds),
        cpu_s=round(window_cpu, 1),
        load_average_5min=round(window_load, 2),
        faults=faults.log,
        unexpected_exits=unexpected,
        memory=memory,
        memory_over_bound=over,
        memory_bound_mb=MEMORY_BOUND_MB,
        machine=machine(),
        servers={"postgresql": servers.pg_version(), "redis": servers.redis_version()},
    )
    problems = []
    if result["duplicated"]:
        problems.append(f"{result['duplicated']} duplicated")
    if result["unexplained"]:
        problems.append(f"{result['unexplained']} unexplained")
    problems += over
    ran = sum(result["outcomes"].get(s, 0) for s in ("success", "failure", "timeout", "lost"))
    result["ran"] = ran
    if ran < args.min_ran * result["expected"]:
        problems.append(
            f"the load was not carried: {ran:,} of {result['expected']:,} fire times ran "
            f"(at least {args.min_ran:.0%} must)"
        )
    problems += [f for f in unexpected]
    problems += [f"fault: {f['what']}" for f in faults.log if f.get("problem")]
    kinds = {f["fault"] for f in faults.log}
    if not args.no_faults and not {"beat", "worker", "postgres"} <= kinds:
        problems.append(f"not every fault happened: {sorted(kinds)}")
    result["problems"] = problems
    result["passed"] = not problems
    return result


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().split()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(int(mem[mem.index("MemTotal:") + 1]) / 1024**2),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def print_report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print()
    print(
        f"Soak: {r['duration_s']:.0f} s window at {r['rate']} runs/s (2 beats, 2 workers of "
        f"{r['concurrency']} prefork processes; PostgreSQL {r['servers']['postgresql'].split('-')[0]}, Redis "
        f"{r['servers']['redis']}, own servers); {m['cpus']} cores ({m['cpu']}), "
        f"{m['memory_gib']} GiB, load at end {m['load_average_at_end']}"
    )
    print(f"window {r['window'][0]} .. {r['window'][1]} (both included); settled "
          f"{r['settled_after_s']} s after it")  # fmt: skip
    print("faults:")
    for f in r["faults"]:
        print(f"  +{f['at']:6.1f} s  {f['what']}")
    for u in r["unexpected_exits"]:
        print(f"  UNEXPECTED {u}")
    late = r["lateness_ms"]
    outcomes = ", ".join(f"{k} {v:,}" for k, v in r["outcomes"].items())
    print(f"runs expected     {r['expected']:>9,}")
    print(f"recorded          {r['recorded']:>9,}  ({outcomes}; function called {r['calls']:,}x)")
    print(f"duplicated        {r['duplicated']:>9,}  (messages run twice: "
          f"{r['messages_run_twice']})")  # fmt: skip
    print(f"unexplained       {r['unexplained']:>9,}  (no record {r['no_record']}, still "
          f"running {r['still_running']}, inconsistent {r['inconsistent']})")  # fmt: skip
    for example in r["duplicated_examples"] + r["unexplained_examples"]:
        print(f"    {example}")
    cpu_ms = 1000 * r["cpu_s"] / r["ran"] if r["ran"] else 0
    print(f"CPU of beats and workers in the window {r['cpu_s']:,.0f} s ({cpu_ms:.1f} ms per run "
          f"that ran); machine load average (5 min) at the window's end "
          f"{r['load_average_5min']}")  # fmt: skip
    print(f"lateness of the {late['runs']:,} runs that ran: p50 {late['p50']} ms, "
          f"p99 {late['p99']} ms, max {late['max']} ms")  # fmt: skip
    print(f"memory, RSS in MB (main + pool processes), after warm-up -> end; bound "
          f"+{r['memory_bound_mb']:.0f} MB for those that lived {MEMORY_MIN_LIFE:.0f} s "
          "after warm-up:")  # fmt: skip
    for e in r["memory"]:
        warm = e["warm_mb"] and f"{e['warm_mb']['main']:.1f} + {e['warm_mb']['pool']:.1f}"
        end = e["end_mb"] and f"{e['end_mb']['main']:.1f} + {e['end_mb']['pool']:.1f}"
        growth = f"{e['growth_mb']:+.1f}" if "growth_mb" in e else "-"
        print(f"  {e['process']:<12} {warm or '-':>14} -> {end or '-':<14} {growth:>7} MB  "
              f"lived {e['lived_after_warm_up_s']:>5} s after warm-up, CPU {e['cpu_s']:>6.1f} s, "
              f"{e['end']}")  # fmt: skip
    print("PASS" if r["passed"] else "FAIL: " + "; ".join(r["problems"]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3600, help="window, seconds")
    parser.add_argument("--rate", type=int, default=100, help="runs per second (jobs)")
    parser.add_argument("--kill-every", type=float, default=180, help="seconds between kills")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="prefork processes of each worker"
    )
    parser.add_argument("--warm-up", type=float, default=30, help="seconds before the window")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the faults")
    parser.add_argument(
        "--no-faults", action="store_true", help="no kills, no restart (to measure the load)"
    )
    parser.add_argument(
        "--min-ran",
        type=float,
        default=0.9,
        help="share of the fire times that must run, not be missed (default 0.9)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data directory")
    args = parser.parse_args()
    if args.rate < 2 or args.duration < 20:
        parser.error("--rate must be at least 2 and --duration at least 20 s")
    servers = Servers(keep=args.keep)
    fleet_holder: list[Fleet] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        result = run(args, servers, fleet_holder)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for fleet in fleet_holder:
            fleet.kill_all()
        servers.stop()
    (OUT_DIR / "result.json").write_text(json.dumps(result, indent=2, default=str))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
