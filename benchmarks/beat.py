"""Beat at size: the stock django-celery-beat DatabaseScheduler against ours, end to end.

For each size N and for both schedulers: N enabled jobs on PostgreSQL (cron, interval and
one-off date jobs, mixed, on schedules far in the future), a real ``celery beat`` process
publishing to a real Redis, and every message taken off Redis's ``celery`` list as it
arrives. Three beat processes per size and scheduler, each on a freshly emptied Redis:

1. start-up (until the message of a job due at launch arrives), the idle tick, and three
   edits that make one job due 2 s later;
2. a burst: 1,000 of the N jobs due at the same moment;
3. 100 of the N jobs firing every second, for 15 s.

Beat's peak RSS is read from ``/proc/<pid>/status`` (VmHWM) at the end of each. Both beats
run a thin subclass of their scheduler that only times ``tick()`` and appends it to a file
(``benchmarks.beat:TimedStockScheduler`` and ``benchmarks.beat:TimedJobScheduler``).

    DJANGO_DEBUG=1 .venv/bin/python benchmarks/beat.py [--sizes 1000,10000,100000] [--only stock|ours]

``--storm`` measures instead a storm (issue 18): ``--storm-due`` of ``--storm-size`` jobs
(default 10,000 of 100,000) due at the same second, each scheduler in its own beat on the
same rows, from the fire time to the last message in Redis: stock (at that size, and at a
tenth of it while it misses the cap of ``--storm-cap`` seconds), ours as it was before
(``--before``, default the merge base with ``main``: that commit's tree is extracted into
``var/bench/beat/before-<commit>`` and its beat runs from there) and ours now.
``--storm --short`` (2,000 jobs, 500 due; under a minute) is the version for CI.

Uses the database ``bench_beat`` on the server of $BENCH_DATABASE_URL (created and migrated
when missing; ``--recreate`` drops it first) and Redis $BENCH_REDIS_URL (default
redis://127.0.0.1:6379/12); both are emptied as it goes. Beat logs and tick files are kept
in ``var/bench/beat/``.
"""

import argparse
import base64
import dataclasses
import datetime as dt
import importlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_beat")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
OUT_DIR = ROOT / "var" / "bench" / "beat"
QUEUE = "celery"  # the Redis list kombu pushes messages of the default queue onto
# ... and its lists of priorities 1-9 (kombu's Redis transport has one list per step; a
# job's priority 0 is step 9 there, see scheduling.services.message_routing).
QUEUE_LISTS = [QUEUE, *(f"{QUEUE}\x06\x16{step}" for step in range(1, 10))]
TICK_LOG_ENV = "BENCH_BEAT_TICK_LOG"

BURST = 1000
EVERY_SECOND = 100
EDITS = 3
EDIT_LEAD = 2  # an edit makes its job due this many seconds later
IDLE_SECONDS = 8.0
LATENESS_SECONDS = 15
START_CAP = 240.0  # longest wait for a beat to start
EDIT_CAP = 60.0
BURST_CAP = 120.0
STOP_TIMEOUT = 20.0

# Issue #6: the figures ours must reach at 100,000 jobs.
TARGETS = {
    "startup": "< 15 s",
    "idle": "< 2 ms",
    "edit": "< 50 ms",
    "burst": "all within 1 s",
    "memory": "< 150 MB",
    "lateness": "p99 < 100 ms",
}


# --- inside the beat process -------------------------------------------------------------


class TickTimer:
    """Mixin for a beat scheduler: times each ``tick()``, changing nothing else.

    Appends one line per tick to the file named by $BENCH_BEAT_TICK_LOG: wall-clock start,
    duration in seconds, and the delay ``tick()`` returned (0: it sent something or wants
    to run again at once). The first line says how many entries the scheduler holds in
    memory after its first tick (-1: it keeps none).
    """

    _tick_log = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        wall = time.time()
        started = time.perf_counter()
        delay = None
        try:
            delay = super().tick(*args, **kwargs)
            return delay
        finally:
            self._log_tick(wall, time.perf_counter() - started, delay)

    def _log_tick(self, wall: float, duration: float, delay: float | None) -> None:
        if self._tick_log is None:
            path = os.environ.get(TICK_LOG_ENV)
            if not path:
                return
            self._tick_log = open(path, "a", buffering=1)  # noqa: SIM115 - lives with beat
            entries = vars(self).get("_schedule")
            self._tick_log.write(f"# entries {-1 if entries is None else len(entries)}\n")
        self._tick_log.write(f"{wall:.6f} {duration:.6f} {-1.0 if delay is None else delay:.6f}\n")


_TIMED_BASES = {
    "TimedStockScheduler": ("django_celery_beat.schedulers", "DatabaseScheduler"),
    "TimedJobScheduler": ("scheduling.scheduler", "JobScheduler"),
}


def __getattr__(name: str) -> type:
    """Build ``TimedStockScheduler`` / ``TimedJobScheduler`` on first use.

    Their bases import Django models, so they cannot be defined when this module is run as
    a script (before ``django.setup()``); beat looks them up only once Django is set up.
    """
    if name not in _TIMED_BASES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, base_name = _TIMED_BASES[name]
    base = getattr(importlib.import_module(module), base_name)
    timed = type(
        name,
        (TickTimer, base),
        {"__module__": __name__, "__doc__": f"{base_name} with every tick() timed."},
    )
    globals()[name] = timed
    return timed


# --- measuring from outside ----------------------------------------------------------------


@dataclasses.dataclass
class Tick:
    start: float
    duration: float
    delay: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclasses.dataclass
class Message:
    arrived: float
    name: str
    fire: float | None  # ours: scheduled_at + jitter, from the message; stock: None


def decode(raw: bytes, arrived: float) -> Message:
    """A kombu Redis message: a JSON envelope whose body is base64 JSON [args, kwargs, embed]."""
    envelope = json.loads(raw)
    headers = envelope.get("headers") or {}
    name = headers.get("periodic_task_name") or headers.get("task") or "?"
    fire = None
    if headers.get("task") == "scheduling.run_job":
        kwargs = json.loads(base64.b64decode(envelope["body"]))[1]
        fire = dt.datetime.fromisoformat(kwargs["scheduled_at"]).timestamp()
        fire += float(kwargs.get("jitter") or 0)
    return Message(arrived, name, fire)


class Consumer(threading.Thread):
    """Takes every message off the queue's Redis list and notes when it arrived."""

    def __init__(self) -> None:
        import redis

        super().__init__(daemon=True)
        self.redis = redis.Redis.from_url(REDIS_URL)
        self._raw: list[tuple[float, bytes]] = []
        self._decoded: list[Message] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            item = self.redis.brpop(QUEUE_LISTS, timeout=0.2)
            if item is None:
                continue
            self._raw.append((time.time(), item[1]))
            # Whatever else is waiting; stamped after it was taken (an upper bound).
            for key in QUEUE_LISTS:
                more = self.redis.rpop(key, 1000)
                if more:
                    now = time.time()
                    self._raw.extend((now, raw) for raw in more)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def messages(self) -> list[Message]:
        raw = self._raw
        while len(self._decoded) < len(raw):
            arrived, body = raw[len(self._decoded)]
            self._decoded.append(decode(body, arrived))
        return self._decoded


class Beat:
    """One ``celery beat`` process with a timed scheduler; its log and tick file are kept."""

    def __init__(self, scheduler: str, tag: str, root: Path = ROOT) -> None:
        self.scheduler = scheduler
        self.root = root  # the tree beat runs from (the code before a change, for --storm)
        self.log_path = OUT_DIR / f"{tag}.log"
        self.tick_path = OUT_DIR / f"{tag}.ticks"
        self.proc: subprocess.Popen | None = None
        self.launched = 0.0
        self.peak_rss_mb: float | None = None

    def start(self) -> None:
        self.tick_path.unlink(missing_ok=True)
        env = {
            **os.environ,
            "DATABASE_URL": DATABASE_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "DJANGO_DEBUG": "1",
            "PYTHONPATH": str(self.root),  # so beat can import benchmarks.beat
            "PYTHONUNBUFFERED": "1",
            TICK_LOG_ENV: str(self.tick_path),
        }
        celery = Path(sys.executable).with_name("celery")
        command = [str(celery), "-A", "project", "beat", "-S", self.scheduler]
        command += ["--loglevel", "WARNING", "--pidfile=", "-s", str(OUT_DIR / "schedule")]
        with open(self.log_path, "w") as log:
            self.launched = time.time()
            self.proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ticks(self) -> list[Tick]:
        if not self.tick_path.exists():
            return []
        ticks = []
        for line in self.tick_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and not line.startswith("#"):
                ticks.append(Tick(*map(float, parts)))
        return ticks

    def entries(self) -> int | None:
        if self.tick_path.exists():
            first = self.tick_path.read_text().split("\n", 1)[0]
            if first.startswith("# entries "):
                count = int(first.split()[-1])
                return None if count < 0 else count
        return None

    def ready_at(self) -> float | None:
        """End of the first completed tick (wall clock), or None."""
        ticks = self.ticks()
        return ticks[0].end if ticks else None

    def read_peak_rss(self) -> None:
        if not self.alive():
            return
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_mb = int(line.split()[1]) / 1024

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.read_peak_rss()
        os.killpg(self.proc.pid, signal.SIGTERM)  # beat's group: it was started in its own
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


def wait_until(condition: Callable[[], bool], deadline: float, beat: Beat) -> bool:
    while time.time() < deadline:
        if condition():
            return True
        if not beat.alive():
            return condition()
        time.sleep(0.05)
    return condition()


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def job_name(index: int) -> str:
    return f"bench-{index:06d}"


def job_index(name: str) -> int | None:
    prefix, _, number = name.partition("-")
    return int(number) if prefix == "bench" and number.isdigit() else None


def utc(moment: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment, dt.UTC)


def chunks(items: list, size: int = 1000) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def far_month() -> int:
    """A month about half a year away: far-future schedules never fire during the run."""
    return (dt.datetime.now(dt.UTC).month + 5) % 12 + 1


# --- the two schedulers' jobs ---------------------------------------------------------------


class StockJobs:
    """django-celery-beat ``PeriodicTask`` rows on a few shared schedule rows; after each bulk
    write ``PeriodicTasks.update_changed()``, as its README asks."""

    label = "stock"
    scheduler = "benchmarks.beat:TimedStockScheduler"
    task = "bench.noop"  # never consumed by a worker: only counted in Redis

    def __init__(self) -> None:
        from django_celery_beat import models

        self.m = models

    def seed(self, size: int) -> None:
        m = self.m
        month = far_month()
        now = dt.datetime.now(dt.UTC)
        # hour "*": stock (>= 2.8) loads a crontab with a fixed hour only while that hour is
        # within 2 hours of now (checked at every reload), so these are all in memory.
        self.far_crontabs = [
            m.CrontabSchedule.objects.create(
                minute=str(k), hour="*", day_of_month="1", month_of_year=str(month), timezone="UTC"
            )
            for k in range(10)
        ]
        intervals = [
            m.IntervalSchedule.objects.create(every=30 + k, period=m.IntervalSchedule.DAYS)
            for k in range(10)
        ]
        clocks = [
            m.ClockedSchedule.objects.create(clocked_time=now + dt.timedelta(days=365, hours=k))
            for k in range(10)
        ]
        tasks = []
        for i in range(size):
            kind = i % 3
            task = m.PeriodicTask(name=job_name(i), task=self.task, enabled=True)
            if kind == 0:
                task.crontab = self.far_crontabs[i % 10]
            elif kind == 1:
                task.interval = intervals[i % 10]
            else:
                task.clocked, task.one_off = clocks[i % 10], True
            tasks.append(task)
        m.PeriodicTask.objects.bulk_create(tasks, batch_size=5000)
        m.PeriodicTasks.update_changed()

    def _set(self, indices: Iterable[int], **fields: Any) -> None:
        schedule = {"crontab": None, "interval": None, "clocked": None, "solar": None}
        # enabled: stock disables a one-off task once it ran (our edits make some).
        values = {**schedule, "one_off": False, "enabled": True, "last_run_at": None}
        values.update({"total_run_count": 0, **fields})
        for names in chunks([job_name(i) for i in indices]):
            self.m.PeriodicTask.objects.filter(name__in=names).update(**values)
        self.m.PeriodicTasks.update_changed()

    def reset(self, indices: Iterable[int]) -> None:
        self._set(indices, crontab=self.far_crontabs[0])

    def set_due_now(self, index: int, at: float) -> None:
        clocked = self.m.ClockedSchedule.objects.create(clocked_time=utc(at))
        self._set([index], clocked=clocked, one_off=True)

    def burst_time(self, earliest: float) -> float:
        return math.ceil(earliest / 60) * 60  # crontab has minutes, not seconds

    def set_burst(self, indices: Iterable[int], at: float) -> None:
        moment = utc(at)
        crontab = self.m.CrontabSchedule.objects.create(
            minute=str(moment.minute),
            hour=str(moment.hour),
            day_of_month=str(moment.day),
            month_of_year=str(moment.month),
            timezone="UTC",
        )
        self._set(indices, crontab=crontab)

    def set_every_second(self, indices: Iterable[int], start: float) -> None:
        every, _ = self.m.IntervalSchedule.objects.get_or_create(
            every=1, period=self.m.IntervalSchedule.SECONDS
        )
        self._set(indices, interval=every)

    def edit(self, index: int, fire_at: float) -> None:
        """What the admin does: save the task with a new (one-off, clocked) schedule."""
        task = self.m.PeriodicTask.objects.get(name=job_name(index))
        task.clocked = self.m.ClockedSchedule.objects.create(clocked_time=utc(fire_at))
        task.crontab = task.interval = task.solar = None
        task.one_off = True
        task.save()


class OurJobs:
    """``scheduling.models.Job`` rows, created with ``services.job_bulk_create``."""

    label = "ours"
    scheduler = "benchmarks.beat:TimedJobScheduler"
    task = "demo.echo"

    def __init__(self) -> None:
        from scheduling import services
        from scheduling.models import Job

        self.Job = Job
        self.services = services
        self.far_cron = f"0 0 0 1 {far_month()} *"

    def seed(self, size: int) -> None:
        Job = self.Job
        month = far_month()
        now = dt.datetime.now(dt.UTC)
        jobs = []
        for i in range(size):
            kind = i % 3
            job = Job(name=job_name(i), task=self.task, timezone=("UTC", "Asia/Shanghai")[i % 2])
            if kind == 0:
                job.trigger_type = "cron"
                job.cron_expression = f"{i % 60} {(i // 60) % 60} * 1 {month} *"
            elif kind == 1:
                job.trigger_type = "interval"
                job.interval_every, job.interval_period = 30 + i % 30, "days"
            else:
                job.trigger_type = "date"
                job.run_at = now + dt.timedelta(days=365, seconds=i)
            jobs.append(job)
        self.services.job_bulk_create(jobs=jobs)

    def _set(self, indices: Iterable[int], fire: float, **fields: Any) -> None:
        """Change jobs while no beat runs: the trigger and the fire time beat starts from."""
        from django.db.models import F
        from django.utils import timezone

        moment = utc(fire)  # jitter 0: sent at the fire time
        values = {"run_at": None, "timezone": "UTC", "next_run_at": moment, "dispatch_at": moment}
        values.update(fields, version=F("version") + 1, updated_at=timezone.now())
        for names in chunks([job_name(i) for i in indices]):
            self.Job.objects.filter(name__in=names).update(**values)

    def reset(self, indices: Iterable[int]) -> None:
        indices = list(indices)
        if not indices:
            return
        probe = self.Job(trigger_type="cron", cron_expression=self.far_cron, timezone="UTC")
        fire = probe.trigger().next_after(dt.datetime.now(dt.UTC)).timestamp()
        self._set(
            indices, fire, trigger_type="cron", cron_expression=self.far_cron, misfire_grace_time=15
        )

    def set_due_now(self, index: int, at: float) -> None:
        # A long grace: the run is sent however long beat takes to start.
        self._set([index], at, trigger_type="date", run_at=utc(at), misfire_grace_time=3600)

    def burst_time(self, earliest: float) -> float:
        return float(math.ceil(earliest))

    def set_burst(self, indices: Iterable[int], at: float) -> None:
        m = utc(at)
        expression = f"{m.second} {m.minute} {m.hour} {m.day} {m.month} *"
        self._set(indices, at, trigger_type="cron", cron_expression=expression)

    def set_every_second(self, indices: Iterable[int], start: float) -> None:
        self._set(indices, start, trigger_type="cron", cron_expression="* * * * * *")

    def edit(self, index: int, fire_at: float) -> None:
        """What the admin does: reschedule through the service (validated, one transaction)."""
        job = self.Job.objects.get(name=job_name(index))
        self.services.job_reschedule(job=job, trigger_type="date", run_at=utc(fire_at))


# --- scenarios ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    label: str
    size: int
    seed_s: float = 0.0
    startup_s: float | None = None  # launch -> message of the job due at launch
    ready_s: list[float] = dataclasses.field(default_factory=list)  # launch -> first tick done
    entries: int | None = None
    idle_ms: list[float] = dataclasses.field(default_factory=list)
    edits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    burst: dict[str, Any] = dataclasses.field(default_factory=dict)
    rss_mb: list[float] = dataclasses.field(default_factory=list)
    lateness: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


class Run:
    """All scenarios of one scheduler at one size."""

    def __init__(self, jobs: StockJobs | OurJobs, size: int) -> None:
        self.jobs = jobs
        self.size = size
        self.result = Result(jobs.label, size)
        self.dirty: set[int] = set()
        self.startup_index = size - 1
        self.edit_indices = [size - 2 - k for k in range(EDITS)]
        self.burst_indices = list(range(min(BURST, size)))
        self.every_second_indices = list(range(min(EVERY_SECOND, size)))

    def say(self, text: str) -> None:
        print(f"[{self.jobs.label} {self.size:,}] {text}", flush=True)

    def execute(self) -> Result:
        empty_database()
        started = time.perf_counter()
        self.jobs.seed(self.size)
        self.result.seed_s = time.perf_counter() - started
        self.say(f"{self.size:,} jobs created in {self.result.seed_s:.1f} s")
        for scenario in (self.startup_idle_edit, self.burst, self.every_second):
            try:
                scenario()
            except Exception as exc:  # keep going: print what happened
                self.result.notes.append(f"{scenario.__name__} failed: {exc!r}")
                self.say(f"{scenario.__name__} failed: {exc!r}")
        return self.result

    def _launch(self, tag: str) -> tuple[Beat, Consumer]:
        empty_broker_and_leases()
        consumer = Consumer()
        consumer.start()
        beat = Beat(self.jobs.scheduler, f"{self.jobs.label}-{self.size}-{tag}")
        beat.start()
        return beat, consumer

    def _finish(self, beat: Beat, consumer: Consumer) -> None:
        beat.stop()
        consumer.stop()
        if beat.peak_rss_mb is not None:
            self.result.rss_mb.append(beat.peak_rss_mb)
        ready = beat.ready_at()
        if ready is not None:
            self.result.ready_s.append(ready - beat.launched)
        if self.result.entries is None:
            self.result.entries = beat.entries()
        if beat.proc is not None and beat.proc.returncode not in (0, -signal.SIGTERM, None):
            self.result.notes.append(f"{beat.log_path.name}: beat exited {beat.proc.returncode}")

    def _prepare(self) -> None:
        self.jobs.reset(sorted(self.dirty))
        self.dirty.clear()

    def _wait_ready(self, beat: Beat) -> float | None:
        wait_until(lambda: beat.ready_at() is not None, beat.launched + START_CAP, beat)
        ready = beat.ready_at()
        if ready is None:
            self.result.notes.append(
                f"{beat.log_path.name}: no tick within {START_CAP:.0f} s:\n{beat.log_tail()}"
            )
        return ready

    def _startup_estimate(self) -> float:
        return max([*self.result.ready_s, self.result.startup_s or 0.0, 2.0])

    def startup_idle_edit(self) -> None:
        self._prepare()
        self.jobs.set_due_now(self.startup_index, time.time())
        self.dirty.add(self.startup_index)
        beat, consumer = self._launch("1-startup-idle-edit")
        try:
            name = job_name(self.startup_index)

            def first_run() -> Message | None:
                return next((m for m in consumer.messages() if m.name == name), None)

            wait_until(lambda: first_run() is not None, beat.launched + START_CAP, beat)
            message = first_run()
            if message is None:
                self.result.notes.append(
                    f"start-up: no message within {START_CAP:.0f} s:\n{beat.log_tail()}"
                )
                if beat.ready_at() is None:
                    return
            else:
                self.result.startup_s = message.arrived - beat.launched
                self.say(f"start-up {self.result.startup_s:.2f} s")

            # Idle: nothing is due until the first edit.
            time.sleep(2.0)
            window_start = time.time()
            time.sleep(IDLE_SECONDS)
            window_end = time.time()
            self.result.idle_ms = [
                t.duration * 1000
                for t in beat.ticks()
                if t.start >= window_start and t.end <= window_end and t.delay != 0
            ]
            if self.result.idle_ms:
                self.say(
                    f"idle tick median {statistics.median(self.result.idle_ms):.2f} ms "
                    f"({len(self.result.idle_ms)} ticks)"
                )

            for index in self.edit_indices:
                if not beat.alive():
                    break
                self.dirty.add(index)
                edit = self._edit(beat, consumer, index)
                self.result.edits.append(edit)
                self.say(
                    "edit: pickup tick {pickup}, message {late}".format(
                        pickup=fmt_ms(edit.get("pickup_ms")),
                        late=fmt_late(edit.get("late_s"), EDIT_CAP),
                    )
                )
                if edit.get("late_s") is None or edit["late_s"] > 10:
                    break  # slow: one sample has to do
                time.sleep(1.0)
            beat.read_peak_rss()
        finally:
            self._finish(beat, consumer)

    def _edit(self, beat: Beat, consumer: Consumer, index: int) -> dict[str, Any]:
        name = job_name(index)
        fire = math.ceil(time.time()) + EDIT_LEAD
        started = time.perf_counter()
        self.jobs.edit(index, fire)
        call_ms = (time.perf_counter() - started) * 1000
        committed = time.time()

        def arrival() -> float | None:
            return next(
                (
                    m.arrived
                    for m in consumer.messages()
                    if m.name == name and m.arrived > committed
                ),
                None,
            )

        wait_until(lambda: arrival() is not None, fire + EDIT_CAP, beat)
        arrived = arrival()
        end = arrived if arrived is not None else time.time()
        # Ticks running at any time between the commit and the run: one that started
        # before the commit may be the one that reads it (or keeps beat from reading it).
        window = [t for t in beat.ticks() if t.end >= committed and t.start <= end]
        edit: dict[str, Any] = {"ticks": len(window), "call_ms": call_ms}
        if window:
            slowest = max(window, key=lambda t: t.duration)
            edit["pickup_ms"] = slowest.duration * 1000
            edit["pickup_sum_ms"] = sum(t.duration for t in window) * 1000
        if arrived is not None:
            edit["late_s"] = arrived - fire
        return edit

    def burst(self) -> None:
        self._prepare()
        # Due once the beat (started next) should be up, judging by the first start-up.
        at = self.jobs.burst_time(time.time() + 1.5 * self._startup_estimate() + 5)
        indices = self.burst_indices
        self.jobs.set_burst(indices, at)
        self.dirty.update(indices)
        names = {job_name(i) for i in indices}
        beat, consumer = self._launch("2-burst")
        try:

            def arrivals() -> list[float]:
                return [m.arrived for m in consumer.messages() if m.name in names]

            self.say(f"burst of {len(indices):,} due in {at - time.time():.0f} s")
            wait_until(lambda: len(arrivals()) >= len(indices), at + BURST_CAP, beat)
            times = arrivals()
            missing = sorted(names - {m.name for m in consumer.messages()})
            if missing:
                self.result.notes.append(
                    f"burst: no message within {BURST_CAP:.0f} s for {len(missing)} jobs, "
                    f"e.g. {', '.join(missing[:5])}"
                )
            ready = beat.ready_at()
            self.result.burst = {
                "count": len(times),
                "of": len(indices),
                "first_s": min(times) - at if times else None,
                "last_s": max(times) - at if times else None,
                "ready_before": ready is not None and ready <= at,
            }
            self.say(
                f"burst: {len(times)}/{len(indices)}, last {fmt_late(self.result.burst['last_s'], BURST_CAP)}"
            )
            beat.read_peak_rss()
        finally:
            self._finish(beat, consumer)

    def every_second(self) -> None:
        self._prepare()
        start = math.ceil(time.time() + 1.5 * self._startup_estimate() + 3)
        indices = self.every_second_indices
        self.jobs.set_every_second(indices, start)
        self.dirty.update(indices)
        names = {job_name(i) for i in indices}
        beat, consumer = self._launch("3-every-second")
        try:
            ready = self._wait_ready(beat)
            if ready is None:
                return
            window_start = math.ceil(max(ready, start) + 2)
            window_end = window_start + LATENESS_SECONDS
            sleep_until(window_end + 3)  # room for the last fire times to arrive
            beat.read_peak_rss()
            messages = [m for m in consumer.messages() if m.name in names]
            self.result.lateness = lateness(
                messages,
                window_start,
                window_end,
                jobs=len(indices),
                ready=ready,
                stock=isinstance(self.jobs, StockJobs),
            )
            self.say("lateness: " + fmt_lateness(self.result.lateness))
        finally:
            self._finish(beat, consumer)


def lateness(
    messages: list[Message], start: float, end: float, *, jobs: int, ready: float, stock: bool
) -> dict[str, Any]:
    """Lateness of runs in [start, end): ours against the fire time in each message; stock,
    which has no fire time, against its interval rule: due 1 s after the task's previous
    run, or, for its first run in this beat, when beat was ready (it was due before)."""
    late: list[float] = []
    if stock:
        by_name: dict[str, list[float]] = defaultdict(list)
        for m in messages:
            by_name[m.name].append(m.arrived)
        for arrivals in by_name.values():
            arrivals.sort()
            dues = [ready] + [arrived + 1.0 for arrived in arrivals]
            late += [a - due for a, due in zip(arrivals, dues, strict=False) if start <= a < end]
        received = sum(start <= m.arrived < end for m in messages)
        expected = jobs * int(end - start)  # had every task run every second
    else:
        in_window = [m for m in messages if m.fire is not None and start <= m.fire < end]
        late = [m.arrived - m.fire for m in in_window]
        received = len(in_window)
        expected = jobs * int(end - start)
    result: dict[str, Any] = {
        "received": received,
        "expected": expected,
        "rate": received / (end - start),
    }
    if late:
        result.update(
            p50_ms=percentile(late, 50) * 1000,
            p99_ms=percentile(late, 99) * 1000,
            max_ms=max(late) * 1000,
        )
    return result


# --- database and broker ------------------------------------------------------------------------


def ensure_database(recreate: bool) -> None:
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if recreate:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)


def _tables(app_label: str, only: Callable[[str], bool] = lambda name: True) -> list[str]:
    from django.apps import apps

    return [
        model._meta.db_table
        for model in apps.get_app_config(app_label).get_models()
        if only(model.__name__.lower())
    ]


def _truncate(tables: list[str]) -> None:
    from django.db import connection

    if tables:
        with connection.cursor() as cursor:
            quoted = ", ".join(f'"{table}"' for table in tables)
            cursor.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")


def empty_database() -> None:
    _truncate(_tables("scheduling") + _tables("django_celery_beat"))


def empty_broker_and_leases() -> None:
    """A fresh Redis db, and no lease or heartbeat left by the previous beat."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    _truncate(_tables("scheduling", lambda name: "lease" in name or "heartbeat" in name))


# --- printing -------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.2f} ms"


def fmt_late(value: float | None, cap: float) -> str:
    if value is None:
        return f"not arrived (> {cap:.0f} s)"
    return f"{value:+.3f} s" if abs(value) < 10 else f"{value:+.1f} s"


def fmt_lateness(data: dict[str, Any]) -> str:
    if "p50_ms" not in data:
        return f"no runs ({data.get('received', 0)} messages)"
    text = f"{data['p50_ms']:,.0f} / {data['p99_ms']:,.0f} / {data['max_ms']:,.0f} ms"
    return text + f" ({data['received']:,}/{data['expected']:,} runs)"


def rows(result: Result) -> dict[str, str]:
    r = result
    cells: dict[str, str] = {}
    cells["startup"] = "-" if r.startup_s is None else f"{r.startup_s:.1f} s"
    if r.ready_s:
        cells["ready"] = " / ".join(f"{s:.1f}" for s in r.ready_s) + " s"
    if r.idle_ms:
        cells["idle"] = (
            f"{statistics.median(r.idle_ms):.2f} / {percentile(r.idle_ms, 99):.2f} ms "
            f"(mean {statistics.mean(r.idle_ms):.2f}, n={len(r.idle_ms)})"
        )
    edits = [e for e in r.edits if "pickup_ms" in e]
    if edits:
        cells["edit"] = "max " + fmt_ms(max(e["pickup_ms"] for e in edits))
        cells["edit_sum"] = "max " + fmt_ms(max(e["pickup_sum_ms"] for e in edits))
    if r.edits:
        cells["edit_call"] = "max " + fmt_ms(max(e["call_ms"] for e in r.edits))
    if r.edits:
        lates = [e.get("late_s") for e in r.edits]
        cells["edit_late"] = ", ".join(fmt_late(v, EDIT_CAP) for v in lates)
    if r.burst:
        b = r.burst
        if b["count"] == 0:
            cells["burst"] = f"> {BURST_CAP:.0f} s (0/{b['of']})"
        elif b["count"] < b["of"]:
            cells["burst"] = f"{b['first_s']:+.2f} / > {BURST_CAP:.0f} s ({b['count']}/{b['of']})"
        else:
            cells["burst"] = f"{b['first_s']:+.2f} / {b['last_s']:+.2f} s ({b['count']}/{b['of']})"
        if not b["ready_before"]:
            cells["burst"] += " beat not ready in time"
    if r.rss_mb:
        cells["memory"] = f"{max(r.rss_mb):.0f} MB"
    if r.lateness:
        cells["lateness"] = fmt_lateness(r.lateness)
    return cells


ROW_LABELS = [
    ("startup", "start-up: launch -> first run sent", "startup"),
    ("ready", "  (launch -> first tick done, per beat)", None),
    ("idle", "idle tick: median / p99", "idle"),
    ("edit", f"one edit: slowest tick from commit to run ({EDITS} edits)", "edit"),
    ("edit_sum", "  all ticks from commit to run", None),
    ("edit_call", "  the edit itself (stock: save(); ours: service)", None),
    ("edit_late", f"  edited run (due {EDIT_LEAD} s after commit): late by", None),
    ("burst", f"burst of {BURST:,}: first / last late", "burst"),
    ("memory", "memory: peak RSS (VmHWM)", "memory"),
    ("lateness", f"lateness, {EVERY_SECOND} jobs/s: p50 / p99 / max", "lateness"),
]


def print_table(size: int, results: list[Result]) -> None:
    columns = [(r.label, rows(r)) for r in results]
    table = [["", *(label for label, _ in columns), "target (issue #6, ours)"]]
    for key, label, target in ROW_LABELS:
        values = [cells.get(key, "-") for _, cells in columns]
        table.append([label, *values, TARGETS.get(target, "") if target else ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print(f"\n{size:,} enabled jobs, PostgreSQL + Redis")
    for number, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    for r in results:
        details = f"{r.label}: jobs created in {r.seed_s:.1f} s"
        if r.entries is not None:
            details += f"; entries held in memory by beat: {r.entries:,}"
        print(details)
        for note in r.notes:
            print(f"  note: {note}")


METHOD = f"""
How each figure is taken (every beat is a real `celery beat -S benchmarks.beat:Timed...`,
whose scheduler only adds a timer around tick(); "arrives" = taken off Redis's `{QUEUE}` list
by this script, which pops it as soon as it is there):
- start-up: launch of the process -> arrival of the run of a job due at launch; in
  brackets, launch -> end of beat's first tick, for each of the three beats.
- idle tick: every tick of {IDLE_SECONDS:.0f} s in which nothing is due.
- one edit: a job is rescheduled to run once {EDIT_LEAD} s after now (stock: the admin's way,
  PeriodicTask.save() with a clocked one-off schedule; ours: services.job_reschedule to a
  date); the slowest tick (and all ticks) running between the commit and the edited run's
  arrival, the tick that sends it included; the time the edit itself took; and how late
  the edited run arrives against its new fire time (late: the edit was not in effect in
  time). {EDITS} edits, fewer when one arrives more than 10 s late.
- burst: {BURST:,} of the jobs made due at the same moment before beat starts (stock: a
  crontab on that minute, crontab has no seconds; ours: a cron with seconds); arrival of the
  first and last of them after that moment; waiting stops after {BURST_CAP:.0f} s.
- memory: the largest VmHWM (peak RSS) of the three beats.
- lateness: {EVERY_SECOND} jobs due every second, runs in a {LATENESS_SECONDS} s window
  starting 2 s after beat is ready. Ours: arrival - (scheduled_at + jitter) of each message
  (jitter 0). Stock has no seconds in crontab: {EVERY_SECOND} interval tasks of 1 s; stock
  sends one when last_run_at + 1 s has passed and sets last_run_at as it sends it, so its
  fire time is the task's previous arrival + 1 s (its first run in a beat: when beat was
  ready). Runs received / expected ({EVERY_SECOND} per second) shows how far stock drifts.
Jobs not in a scenario have far-future schedules (cron on the 1st of a month half a year
away, intervals of 30-59 days, dates next year). Stock loads only the clocked tasks due
within 5 minutes, so it holds about 2/3 of the jobs in memory ("entries" below).
"""


# --- the storm (issue 18) -------------------------------------------------------------------


@dataclasses.dataclass
class Storm:
    label: str
    size: int
    due: int
    count: int = 0
    first_s: float | None = None
    last_s: float | None = None
    ready_before: bool = True
    rss_mb: float | None = None
    passes: int = 0
    note: str = ""


def before_tree(ref: str) -> tuple[Path, str]:
    """The tree of commit ``ref`` (our code before the change), extracted once."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = OUT_DIR / f"before-{commit[:10]}"
    if not (tree / "manage.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, commit


def storm_once(
    jobs: "StockJobs | OurJobs", label: str, size: int, due: int, cap: float, root: Path = ROOT
) -> Storm:
    """One beat (of ``jobs``' scheduler, run from ``root``) meets ``due`` jobs due at once."""
    result = Storm(label, size, due)
    indices = list(range(due))
    empty_broker_and_leases()
    consumer = Consumer()
    consumer.start()
    beat = Beat(jobs.scheduler, f"storm-{label.replace(' ', '-')}-{size}", root)
    beat.start()
    try:
        # Due once beat is surely up: its first tick, plus a margin.
        wait_until(lambda: beat.ready_at() is not None, beat.launched + START_CAP, beat)
        if beat.ready_at() is None:
            result.note = f"no tick within {START_CAP:.0f} s:\n{beat.log_tail()}"
            return result
        at = jobs.burst_time(time.time() + 3)
        jobs.set_burst(indices, at)
        names = {job_name(i) for i in indices}

        def arrivals() -> list[float]:
            return [m.arrived for m in consumer.messages() if m.name in names]

        print(f"[storm {label} {size:,}] {due:,} due in {at - time.time():.0f} s", flush=True)
        wait_until(lambda: len(arrivals()) >= due, at + cap, beat)
        times = arrivals()
        result.count = len(times)
        if times:
            result.first_s, result.last_s = min(times) - at, max(times) - at
        result.passes = sum(1 for t in beat.ticks() if t.start >= at - 0.5 and t.delay == 0)
        beat.read_peak_rss()
        result.rss_mb = beat.peak_rss_mb
        print(f"[storm {label} {size:,}] {fmt_storm(result, cap)}", flush=True)
    finally:
        beat.stop()
        consumer.stop()
        jobs.reset(indices)
    return result


def fmt_storm(r: Storm, cap: float) -> str:
    if r.note:
        return r.note.splitlines()[0]
    if not r.count:
        return f"none within {cap:.0f} s (0/{r.due:,})"
    last = f"{r.last_s:+.2f} s" if r.count == r.due else f"> {cap:.0f} s"
    text = f"{r.first_s:+.2f} / {last} ({r.count:,}/{r.due:,})"
    rate = r.count / max(r.last_s, 1e-3) if r.count == r.due else r.count / cap
    return f"{text}, {rate:,.0f} msg/s from the fire time"


def storm(
    size: int, due: int, cap: float, before: str, only: str | None = None, repeat: int = 1
) -> bool:
    """Stock, ours before (the commit ``before``; none when empty) and ours now, each
    meeting ``due`` of ``size`` jobs due at once; return whether ours sent every one."""
    results: list[Storm] = []
    started = time.time()
    now = Storm("ours", size, due, note="not run (--only stock)")
    if only != "stock":
        now = storm_ours(results, size, due, cap, before, repeat)
    if only != "ours":
        storm_stock(results, size, due, cap)
    empty_database()
    print(
        f"\nStorm: jobs due at the same second, PostgreSQL + Redis; one beat each, on a fresh "
        f"Redis list; fire time -> arrival of the first / last message (cap {cap:.0f} s)"
    )
    table = [["scheduler", "jobs", "due", "first / last message after the fire time", "RSS"]]
    for r in results:
        rss = "-" if r.rss_mb is None else f"{r.rss_mb:.0f} MB"
        table.append([r.label, f"{r.size:,}", f"{r.due:,}", fmt_storm(r, cap), rss])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for number, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    print(
        "stock: a crontab on the storm's minute (no seconds in crontab), tried at a tenth "
        "of the size while it misses the cap; ours: a cron with seconds. "
        f"Whole storm run: {(time.time() - started) / 60:.1f} min"
    )
    return only == "stock" or (now.count == now.due and not now.note)


def storm_ours(
    results: list[Storm], size: int, due: int, cap: float, before: str, repeat: int
) -> Storm:
    """Ours, before and now, on the same rows (seeded once; reset after each)."""
    empty_database()
    ours = OurJobs()
    seeded = time.perf_counter()
    ours.seed(size)
    print(f"[storm] {size:,} jobs (ours) created in {time.perf_counter() - seeded:.1f} s")
    tree, commit = before_tree(before) if before else (None, "")
    if not before:
        print("[storm] ours before: no commit to compare with (--before, or a main branch)")
    for _ in range(repeat):  # alternately: the machine's load changes over minutes
        if tree is not None:
            label = f"ours before ({commit[:7]})"
            results.append(storm_once(ours, label, size, due, cap, tree))
        now = storm_once(ours, "ours", size, due, cap)
        results.append(now)
    return now


def storm_stock(results: list[Storm], size: int, due: int, cap: float) -> None:
    """Stock: at the same size, and at a tenth of it (a tenth due) until it makes the cap."""
    stock_size, stock_due = size, due
    while True:
        empty_database()
        stock = StockJobs()
        stock.seed(stock_size)
        result = storm_once(stock, "stock", stock_size, stock_due, cap)
        results.append(result)
        if (result.count == result.due and not result.note) or stock_size <= 1000:
            break
        stock_size, stock_due = stock_size // 10, max(stock_due // 10, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--only", choices=["stock", "ours"])
    parser.add_argument("--recreate", action="store_true", help="drop and recreate bench_beat")
    parser.add_argument("--storm", action="store_true", help="the storm instead (issue 18)")
    parser.add_argument("--storm-size", type=int, default=100_000)
    parser.add_argument("--storm-due", type=int, default=10_000)
    parser.add_argument("--storm-cap", type=float, default=120.0)
    parser.add_argument("--storm-repeat", type=int, default=1, help="ours before/now, N times")
    parser.add_argument("--short", action="store_true", help="--storm at 2,000 jobs, 500 due")
    parser.add_argument("--before", default="", help="our code before (default: merge base)")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ["CELERY_BROKER_URL"] = REDIS_URL
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    ensure_database(args.recreate)
    import django

    django.setup()
    # The Django logger of the services would print each edit; keep the output a report.
    import logging

    logging.getLogger("scheduling").setLevel(logging.WARNING)

    if args.storm:
        if args.short:
            args.storm_size, args.storm_due, args.storm_cap = 2000, 500, 30.0
        # The short version (CI, on main) compares with stock only, unless told a commit.
        before = args.before
        if not before and not args.short:
            before = subprocess.run(
                ["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
        storm_args = (args.storm_size, args.storm_due, args.storm_cap, before, args.only)
        if not storm(*storm_args, repeat=args.storm_repeat):
            sys.exit(1)
        return
    kinds = [StockJobs, OurJobs]
    if args.only:
        kinds = [k for k in kinds if k.label == args.only]
    started = time.time()
    all_results: dict[int, list[Result]] = {}
    for size in sizes:
        for kind in kinds:
            all_results.setdefault(size, []).append(Run(kind(), size).execute())
        print_table(size, all_results[size])
    print(METHOD)
    for size, results in all_results.items():
        print_table(size, results)
    print(f"\nwhole run: {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
