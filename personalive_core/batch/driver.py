"""The driver of a batch: checks every row, then streams the jobs to Ray workers, a bounded number in flight.

1. Every row is checked before anything starts; bad rows are reported with their row number (and recorded),
   the good ones run (`strict`: none does).
2. A job whose record says done (or failed) with the same hash of inputs and options is skipped; Ray is only
   started for a job that has to run, so a finished batch re-runs in seconds.
3. Each job's inputs are read once and put into Ray's object store; at most `in_flight` jobs are shipped and
   not finished, so the driver's memory does not depend on the manifest's length.
4. A worker renders one job at a time. Its result comes back as bytes and is written into the output folder
   under a temporary name, renamed when complete, then recorded (results.jsonl). With `shared_out` (the
   output folder on storage every machine mounts at the same path) the worker writes it there itself.
5. When a worker dies (its process killed, its machine gone, its ComfyUI server lost), its job goes to the
   next free worker (`retries` times) and Ray restarts the actor (`max_restarts`), which the driver pings
   until it answers again. A job that fails on its own input is recorded as failed, not retried.
6. Ctrl-C stops the workers; finished work stays (files and records), and the same command resumes.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..config import StreamConfig
from ..errors import InputError
from ..pipelines import Job, job_hash
from . import comfy_api
from .ledger import Ledger
from .manifest import Entry, RowChecker, manifest_rows, pair_rows
from .progress import Progress, print_summary
from .shipping import Digests, output_names, pack, write_output
from .workers import ComfyWorker, CoreWorker, Events, WorkerLost

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # personalive_core, shipped to the workers
BAD_ROWS_SHOWN = 20
REFERENCES_KEPT = 16  # portraits kept in the object store for the next jobs that use them
PING_EVERY_S = 1.0
EVENTS_EVERY_S = 0.25  # progress messages are fetched at most this often (each fetch is a round trip)


class BatchError(InputError):
    """The batch cannot go on (no worker can start, every worker is gone)."""


@dataclass
class BatchSettings:
    """Everything a batch is told (the `batch` command's arguments)."""

    out: str
    manifest: str | None = None
    reference: str | None = None
    driving: str | None = None
    engine: str = "core"
    options: dict[str, Any] = field(default_factory=dict)  # config fields given on the command line
    weights: str | None = None
    download: bool = False  # core: each machine fetches what `weights` lacks before loading (docs/DOWNLOAD.md)
    shared_out: bool = False  # `out` is on storage every machine mounts at the same path: workers write there
    workflow: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)  # --set Node.input=value
    comfyui: str | None = None
    comfyui_python: str = "python3"
    comfyui_args: str = ""
    servers: list[str] = field(default_factory=list)
    poll: float = 1.0
    job_timeout: float = 0
    address: str | None = None
    workers: int | None = None
    gpus: int | None = None
    cpus_per_worker: int = 1
    in_flight: int | None = None
    retries: int = 2
    max_restarts: int = 3
    object_store_mb: int | None = None
    retry_failed: bool = False
    strict: bool = False


@dataclass
class Task:
    """A job on its way: its row, fingerprint, shipped inputs and attempts so far."""

    entry: Entry
    hash: str
    inputs: dict[str, Any]
    args: tuple[Any, ...] = ()
    attempts: int = 0
    worker: str = ""


@dataclass
class Slot:
    """One worker as the driver sees it."""

    index: int
    actor: Any
    state: str = "starting"  # starting, ready, busy, recovering, dead
    ping: Any = None
    ref: Any = None
    task: Task | None = None
    next_ping: float = 0.0
    label: str = ""
    load_s: float | None = None


@dataclass
class Counts:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failed_before: int = 0
    invalid: int = 0
    retried: int = 0
    cancelled: int = 0
    busy_s: float = 0.0
    bytes_back: int = 0  # output bytes the workers sent to the driver (0 with --shared-out)


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Batch:
    """One run of a batch (see the module's docstring)."""

    def __init__(self, settings: BatchSettings, log: Callable[[str], None]) -> None:
        self.s = settings
        self.template = comfy_api.load_workflow(settings.workflow) if settings.engine == "comfyui" else None
        if self.template is not None:
            comfy_api.set_inputs(self.template, settings.sets, "--set")
        self.out = os.path.abspath(settings.out)
        self.ledger = Ledger(self.out)
        self.counts = Counts()
        self.digests = Digests()
        self.ray: Any = None
        self.embedded = False
        self.slots: list[Slot] = []
        self.events: Any = None
        self.pending: deque[Task] = deque()
        self.references: OrderedDict[str, Any] = OrderedDict()
        self.progress = Progress(0, log)
        self.say = self.progress.log  # messages go above the progress bar
        self.gpu, self.cluster_s = False, 0.0
        self.t_first: float | None = None
        self.next_events = 0.0
        self.t0 = time.monotonic()

    # -- 1. the rows -------------------------------------------------------------------------------
    def check_rows(self) -> int:
        """Check and index every row; the number of good ones. Bad rows are reported (and, strict, refused)."""
        s = self.s
        rows = manifest_rows(s.manifest) if s.manifest else pair_rows(s.reference or "", s.driving or "")
        base = os.path.dirname(os.path.abspath(s.manifest)) if s.manifest else os.getcwd()
        checker = RowChecker(base, s.options, s.engine)
        good = 0
        self.ledger.begin()
        try:
            for row in rows:
                entry = self.ledger.add(self._comfy_checked(checker.check(row)))
                if entry.error:
                    self.counts.invalid += 1
                    if self.counts.invalid <= BAD_ROWS_SHOWN:
                        self.say(f"bad row: {entry.error}")
                else:
                    good += 1
        finally:
            self.ledger.commit()
        if self.counts.invalid > BAD_ROWS_SHOWN:
            self.say(f"... and {self.counts.invalid - BAD_ROWS_SHOWN} more bad rows (all in {self.ledger.path})")
        if self.counts.invalid and s.strict:
            raise InputError(
                f"{self.counts.invalid} bad rows: nothing started (--strict); fix them or leave out "
                "--strict to run the good rows"
            )
        return good

    def _comfy_checked(self, entry: Entry) -> Entry:
        if entry.error or self.template is None:
            return entry
        try:
            comfy_api.job_prompt(self.template, entry.options, entry.inputs, entry.out, entry.label)
        except InputError as e:
            return Entry(entry.number, entry.label, error=str(e))
        return entry

    # -- 2. what to run ----------------------------------------------------------------------------
    def tasks(self) -> Iterator[Task]:
        """The jobs to run, in row order; skipped ones are counted (and need no cluster)."""
        for entry in self.ledger.entries():
            task = self._task(entry)
            if task is not None:
                yield task

    def _task(self, entry: Entry) -> Task | None:
        previous = self.ledger.previous(entry.out) or {}
        self.digests.remember(previous.get("inputs"))
        try:
            inputs = {
                "reference": self.digests.describe(entry.reference),
                "driving": self.digests.describe(entry.driving),
            }
        except OSError as e:
            self._record(Task(entry, "", {}), "failed", error=f"{entry.label}: cannot read an input: {e}")
            return None
        digest = lambda path: inputs["reference" if path == entry.reference else "driving"]["sha256"]
        h = job_hash(
            Job(entry.reference, entry.driving, entry.out, StreamConfig.from_dict(entry.options)),
            digest,
            self._extra(entry),
        )
        if previous.get("hash") == h:
            if previous.get("status") == "done" and os.path.isfile(os.path.join(self.out, previous["output"])):
                self.counts.skipped += 1
                self.progress.done(entry.out)
                return None
            if previous.get("status") == "failed" and not self.s.retry_failed:
                self.counts.failed_before += 1
                self.progress.done(entry.out)
                return None
        return Task(entry, h, inputs)

    def _extra(self, entry: Entry) -> str:
        """What else decides a job's output: its workflow (comfyui), with everything set in it."""
        if self.template is None:
            return ""
        return json.dumps(
            comfy_api.job_prompt(self.template, entry.options, entry.inputs, entry.out, entry.label), sort_keys=True
        )

    # -- 3. the cluster and its workers ------------------------------------------------------------
    def start(self) -> None:
        """Join or start Ray and start the workers (once, at the first job that has to run)."""
        t0 = time.monotonic()
        if not self.s.address:  # an embedded cluster is this machine's alone: on loopback, not the network
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported
        if self.s.address and self.s.address != "auto":
            _check_reachable(self.s.address)
        import ray

        self.ray = ray
        env = {"py_modules": [PACKAGE], "excludes": ["__pycache__", "*.pyc"]}
        quiet = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": False,
            "namespace": "personalive-batch",
        }
        try:
            if self.s.address:
                ray.init(
                    address=self.s.address,
                    runtime_env=env,
                    **{k: v for k, v in quiet.items() if k != "include_dashboard"},
                )
            else:
                cpus = max(os.cpu_count() or 1, (self.s.workers or 1) * self.s.cpus_per_worker)
                store = self.s.object_store_mb << 20 if self.s.object_store_mb else None
                ray.init(address="local", num_cpus=cpus, object_store_memory=store, runtime_env=env, **quiet)
                self.embedded = True
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"join the Ray cluster at {self.s.address}" if self.s.address else "start Ray on this machine"
            raise BatchError(f"cannot {where}: {_first_line(e)}{_client_hint(self.s.address, e)}") from None
        node = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.events_name = f"events-{uuid.uuid4().hex[:12]}"
        self.events = (
            ray.remote(Events)
            .options(
                name=self.events_name, num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)
            )
            .remote()
        )
        count, gpu = self._worker_count()
        for i in range(1, count + 1):
            slot = Slot(i, self._actor(i, gpu))
            slot.ping = slot.actor.ready.remote()
            self.slots.append(slot)
        self.gpu, self.cluster_s = gpu, time.monotonic() - t0
        self.say(
            f"ray: {'embedded on this machine' if self.embedded else self.s.address}, "
            f"{count} {'GPU' if gpu else 'CPU'} workers, engine {self.s.engine} "
            f"(cluster up in {self.cluster_s:.1f} s)"
        )

    def _worker_count(self) -> tuple[int, bool]:
        """(workers, on GPUs): one per server given, --workers CPU workers, --gpus, else one per GPU."""
        if self.s.servers:
            return len(self.s.servers), False
        if self.s.workers:
            return self.s.workers, False
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if self.s.gpus or (gpus and self.s.options.get("device") != "cpu"):
            return self.s.gpus or gpus, True
        self.say("no GPU in the cluster: 1 CPU worker (--workers N for more)")
        return 1, False

    def _actor(self, index: int, gpu: bool) -> Any:
        s = self.s
        cpus = 0 if s.servers else s.cpus_per_worker  # a client of a given server only waits on it
        options = {
            "num_gpus": 1 if gpu else 0,
            "num_cpus": cpus,
            "max_restarts": s.max_restarts,
            "max_task_retries": 0,
        }  # the driver retries a lost job itself, on whichever worker is free
        if s.engine == "core":
            config = {**s.options, **({} if gpu else {"device": "cpu"})}
            return (
                self.ray.remote(CoreWorker)
                .options(**options)
                .remote(index, self.events_name, s.weights, config, s.cpus_per_worker, s.download, self._shared_out)
            )
        server = s.servers[index - 1] if s.servers else None
        return (
            self.ray.remote(ComfyWorker)
            .options(**options)
            .remote(
                index,
                self.events_name,
                s.comfyui and os.path.abspath(s.comfyui),
                s.comfyui_python,
                server,
                s.comfyui_args,
                s.poll,
                s.job_timeout,
                self._shared_out,
            )
        )

    @property
    def _shared_out(self) -> str:
        return os.path.abspath(self.s.out) if self.s.shared_out else ""

    # -- 4. the loop -------------------------------------------------------------------------------
    def run(self, good: int) -> None:
        self.progress.total = good
        source, exhausted = self.tasks(), False
        while True:
            while not exhausted and len(self.pending) + self._busy() < self._in_flight():
                task = next(source, None)
                if task is None:
                    exhausted = True
                    if self.slots:
                        self.say("every job's inputs are read and shipped; waiting for the last jobs")
                    break
                if not self.slots:
                    self.start()
                self._ship(task)
                self.pending.append(task)
            self._assign()
            if exhausted and not self.pending and not self._busy():
                return
            self._wait()

    def _in_flight(self) -> int:
        workers = len(self.slots) or 1
        return self.s.in_flight or 2 * workers

    def _busy(self) -> int:
        return sum(slot.task is not None for slot in self.slots)

    def _ship(self, task: Task) -> None:
        entry, ray = task.entry, self.ray
        ref_digest = task.inputs["reference"]["sha256"]
        reference = self.references.pop(ref_digest, None) or ray.put(pack(entry.reference))
        self.references[ref_digest] = reference
        while len(self.references) > REFERENCES_KEPT:
            self.references.popitem(last=False)
        driving = ray.put(pack(entry.driving))
        job = (
            comfy_api.job_prompt(self.template, entry.options, entry.inputs, entry.out, entry.label)
            if self.template is not None
            else entry.options
        )
        task.args = (entry.out, job, reference, driving)

    def _assign(self) -> None:
        for slot in self.slots:
            if slot.state == "ready" and self.pending:
                task = self.pending.popleft()
                task.attempts += 1
                slot.state, slot.task = "busy", task
                slot.ref = slot.actor.render.remote(*task.args)
                if self.t_first is None:
                    self.t_first = time.monotonic()

    def _wait(self) -> None:
        ray = self.ray
        refs = {slot.ref: (slot, False) for slot in self.slots if slot.ref is not None}
        refs.update({slot.ping: (slot, True) for slot in self.slots if slot.ping is not None})
        if refs:
            ready = ray.wait(list(refs), num_returns=1, timeout=0.5)[0]
        else:  # every worker is restarting
            ready = []
            time.sleep(PING_EVERY_S)
        if time.monotonic() >= self.next_events:
            self._events()
            self.next_events = time.monotonic() + EVENTS_EVERY_S
        for ref in ready:
            slot, is_ping = refs[ref]
            if is_ping:
                self._answered(slot)
            else:
                self._result(slot)
        for slot in self.slots:
            if slot.state == "recovering" and slot.ping is None and time.monotonic() >= slot.next_ping:
                slot.ping = slot.actor.ready.remote()
        if all(slot.state == "dead" for slot in self.slots):
            raise BatchError(
                "every worker is gone (each restarted --max-restarts times); finished jobs are kept, "
                "run the same command again to resume"
            )

    def _events(self) -> None:
        try:
            events = self.ray.get(self.events.take.remote(), timeout=10)
        except self.ray.exceptions.RayError:
            return  # progress only: the jobs' own results still arrive
        for kind, key, *rest in events:
            if kind == "start":
                self.progress.started(key, rest[0])
            else:
                self.progress.frames(key, *rest)

    def _answered(self, slot: Slot) -> None:
        """A worker's `ready()` came back: ready, still restarting, or unable to start."""
        ping, slot.ping = slot.ping, None
        errors = self.ray.exceptions
        try:
            info = self.ray.get(ping)
        except errors.RayTaskError as e:
            if isinstance(e.cause, WorkerLost):
                return self._recover(slot, str(e.cause), delay=5 * PING_EVERY_S)
            raise BatchError(f"worker {slot.index} cannot start: {type(e.cause).__name__}: {e.cause}") from None
        except errors.ActorDiedError as e:
            slot.state = "dead"
            self.say(f"worker {slot.index} is gone for good: {_first_line(e)}")
            return None
        except (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError):
            return self._recover(slot, "")
        except errors.RayError as e:  # e.g. its runtime environment cannot be set up
            raise BatchError(f"worker {slot.index} cannot start: {_first_line(e)}") from None
        if slot.load_s is None:
            slot.load_s = info.get("load_s")
            extra = f"; models loaded in {slot.load_s:.1f} s" if slot.load_s is not None else ""
            self.say(f"{info['worker']} ready{extra}")
        slot.state, slot.label = "ready", info["worker"]
        return None

    def _recover(self, slot: Slot, why: str, delay: float = PING_EVERY_S) -> None:
        if slot.state != "recovering" and why:
            self.say(f"worker {slot.index}: {why}; waiting for it to come back")
        slot.state, slot.next_ping = "recovering", time.monotonic() + delay

    def _result(self, slot: Slot) -> None:
        ref, task = slot.ref, slot.task
        assert task is not None
        slot.ref = slot.task = None
        errors = self.ray.exceptions
        try:
            result = self.ray.get(ref)
        except errors.RayTaskError as e:
            if isinstance(e.cause, WorkerLost):
                return self._lost(slot, task, str(e.cause))
            if isinstance(e.cause, KeyboardInterrupt):  # the Ctrl-C reached the worker first
                raise KeyboardInterrupt from None
            slot.state = "ready"
            return self._record(task, "failed", error=f"{type(e.cause).__name__}: {e.cause}", worker=slot.label)
        except errors.RayError as e:  # the worker died (its process, its node, out of memory) or lost the job
            return self._lost(slot, task, _first_line(e))
        slot.state = "ready"
        self.counts.busy_s += result.get("seconds", 0.0)
        for note in result.get("notes", []):
            self.say(f"{task.entry.out}: {note}")
        if result["status"] != "done":
            return self._record(
                task,
                "failed",
                error=f"{task.entry.label}: {result['error']}",
                worker=result["worker"],
                seconds=result["seconds"],
            )
        names = result.get("written")  # --shared-out: the worker wrote them
        if names is None:
            names = output_names(task.entry.out, result["files"])
            for name, (_, data) in zip(names, result["files"], strict=True):
                write_output(self.out, name, data)
                self.counts.bytes_back += len(data)
        return self._record(
            task,
            "done",
            worker=result["worker"],
            seconds=result["seconds"],
            output=names[0],
            frames=result.get("frames"),
            extra=names[1:] or None,
        )

    def _lost(self, slot: Slot, task: Task, why: str) -> None:
        """The worker died with the job: the job goes back to the front of the queue (or fails, out of tries)."""
        self._recover(slot, "")
        if task.attempts > self.s.retries:
            self._record(
                task,
                "failed",
                worker=slot.label,
                error=f"{task.entry.label}: the worker died {task.attempts} times while rendering it "
                f"(--retries {self.s.retries}); last: {why}",
            )
            return
        self.counts.retried += 1
        self.say(
            f"{task.entry.out}: {slot.label or f'worker {slot.index}'} was lost ({why}); the job goes "
            f"to the next free worker (attempt {task.attempts + 1} of {self.s.retries + 1})"
        )
        self.pending.appendleft(task)

    def _record(self, task: Task, status: str, **info: Any) -> None:
        e = task.entry
        record = {
            "row": e.number,
            "out": e.out,
            "status": status,
            "output": info.pop("output", None),
            "error": info.pop("error", None),
            "attempts": task.attempts,
            "seconds": info.pop("seconds", None),
            "worker": info.pop("worker", None),
            "hash": task.hash,
            "frames": info.pop("frames", None),
            "reference": e.reference,
            "driving": e.driving,
            "inputs": task.inputs,
            "finished": now_utc(),
        }
        if info.get("extra"):
            record["extra_outputs"] = info["extra"]
        self.ledger.record(record)
        if status == "done":
            self.counts.done += 1
            self.progress.done(e.out, f"{e.out}: done in {record['seconds']:.1f} s on {record['worker']}")
        else:
            self.counts.failed += 1
            self.progress.done(e.out, f"{e.out}: FAILED: {record['error']}")

    # -- 5. the end --------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ctrl-C: stop the workers (their unfinished jobs are not recorded: the next run does them)."""
        self.counts.cancelled = self._busy() + len(self.pending)
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:
                pass

    def close(self) -> None:
        self.progress.close()
        self.ledger.close()
        if self.ray is not None:
            self.ray.shutdown()

    def summary(self, interrupted: bool) -> dict[str, Any]:
        c, wall = self.counts, time.monotonic() - self.t0
        rendering = time.monotonic() - self.t_first if self.t_first is not None else 0.0
        per_clip = round(c.busy_s / c.done, 3) if c.done else None
        return {
            "done": c.done,
            "skipped": c.skipped,
            "failed": c.failed,
            "failed_before": c.failed_before,
            "invalid": c.invalid,
            "retried": c.retried,
            "cancelled": c.cancelled,
            "interrupted": interrupted,
            "seconds": round(wall, 3),
            "clips_per_s": round(c.done / rendering, 4) if c.done and rendering else 0.0,
            "worker_seconds_per_clip": per_clip,
            "gpu_seconds_per_clip": per_clip if self.slots and self.gpu else None,
            "workers": len(self.slots),
            "engine": self.s.engine,
            "cluster_start_s": round(self.cluster_s, 3) if self.slots else None,
            "model_load_s": [slot.load_s for slot in self.slots],
            "output_bytes_to_driver": c.bytes_back,
            "results": self.ledger.path,
        }


def _client_hint(address: str | None, error: Exception) -> str:
    """Ray Client (ray://) answers a cluster that wants a token it was not sent with a bare timeout."""
    if not (address or "").startswith("ray://") or "timeout" not in str(error).lower():
        return ""
    return (
        ". A cluster started with `ray start` (Ray 2.59 and later) asks for its token: set RAY_AUTH_MODE=token "
        "in this shell (the token comes from RAY_AUTH_TOKEN or ~/.ray/auth_token; `ray get-auth-token` on the "
        "head prints it), and check that the client port (10001) is open"
    )


def _check_reachable(address: str) -> None:
    """A head that does not answer is said at once (Ray would try to connect for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except ValueError:
        raise BatchError(f"--address {address}: use auto, HOST:PORT or ray://HOST:PORT") from None
    except OSError as e:
        raise BatchError(
            f"--address {address}: nothing answers there ({e}); is `ray start --head` running on that "
            "machine, and is the port open?"
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def run_batch(settings: BatchSettings, log: Callable[[str], None]) -> dict[str, Any]:
    """Run a batch; the summary (see `Batch.summary`). Bad input raises InputError before anything starts."""
    batch = Batch(settings, log)
    interrupted, error = False, None
    try:
        good = batch.check_rows()
        batch.run(good)
    except KeyboardInterrupt:
        interrupted = True
        batch.cancel()
        log("interrupted: finished jobs are kept (files and results); run the same command again to resume")
    except InputError as e:  # a refused batch (--strict, a bad flag) or one that cannot go on
        error = str(e)
        batch.cancel()
        log(f"error: {e}")
    finally:
        batch.close()
    summary = {**batch.summary(interrupted), "error": error}
    print_summary(summary, log)
    return summary
