"""The soft-label pass as fine-grained Ray tasks: one per (snapshot, seed, student epoch), started as soon as
the snapshot is in the store, each with a trial's CPU/GPU request, so the pass fills every CPU and GPU that is free.

A group (teacher hash, snapshot, seed) is ready when every epoch 1..max(kd_epochs) is cached; its students are
then released (gate.py). Every task, and every epoch found already cached, is appended to
<experiment>/soft_labels.jsonl, one JSON object a line: teacher_hash, snapshot, seed, epoch, start, end (unix
seconds), node, pid, cached (the timeline figure reads it).
"""
import json
import os
import time
from collections import deque

from .blobs import filesystem, read_bytes, write_bytes
from .errors import UsageError
from .snapshots import SnapshotStore

LOG_FILE = "soft_labels.jsonl"
POLL_SECONDS = 0.2


def soft_label_groups(rows: list[dict]) -> dict:
    """Students that can share teacher logits: (teacher hash, snapshot, seed) -> their rows. The views also depend
    on data and batch size, which are fixed for a whole space."""
    groups: dict = {}
    for row in rows:
        if row["snapshot_epoch"] is not None:
            groups.setdefault((row["teacher_hash"], row["snapshot_epoch"], row["seed"]), []).append(row)
    return groups


class TaskLog:
    """<experiment>/soft_labels.jsonl, appended by the driver (local file, or rewritten whole on an object store,
    which cannot append)."""

    def __init__(self, experiment_path: str):
        self.uri = f"{experiment_path}/{LOG_FILE}"

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        lines = "".join(json.dumps(r) + "\n" for r in records).encode()
        fsys, path = filesystem(self.uri)
        if "://" not in self.uri:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "ab") as f:
                f.write(lines)
            return
        try:
            old = read_bytes(fsys, path)
        except FileNotFoundError:
            old = b""
        write_bytes(fsys, path, old + lines)


class SoftLabelWork:
    """Schedules the soft-label tasks of a sweep's shared groups as their snapshots land (call `poll` until it
    returns False). Reads and updates a pipelining.PipelineState."""

    def __init__(self, exp, space, options, data, rows: list[dict], state):
        from search_spaces import student_config

        from .soft_labels import SoftLabelCache

        self.state, self.options, self.data = state, options, data
        self.store = SnapshotStore(exp.snapshot_root)
        self.log = TaskLog(exp.path)
        # The tasks' teacher pass (a GPU without native bf16 runs float32 instead: its tasks find their entries).
        self.gpus = options.gpus_per_trial or 0
        self.cache = SoftLabelCache(exp.soft_label_root, options.soft_label_precision, "cuda" if self.gpus else "cpu")
        self.epochs = list(range(1, space.max_kd_epochs() + 1))
        shared = [r for r in rows if r.get("soft_labels")]
        self.configs = {group: student_config(members[0]) for group, members in soft_label_groups(shared).items()}
        self.snapshots = {(r["teacher_hash"], r["snapshot_epoch"]) for r in rows if r["snapshot_epoch"] is not None}
        self.waiting = set(self.configs)   # groups whose snapshot has not landed
        self.todo: dict = {}               # group -> epochs not yet computed
        self.backlog: deque = deque()      # (group, epoch) tasks not yet launched
        self.inflight: dict = {}           # ObjectRef -> (group, epoch)
        self.sharers = len(shared)
        self.computed = 0
        self.started = self.ended = None   # the first task's launch, the last one's end (driver clock)
        self._task = self._data_ref = None

    def poll(self) -> bool:
        """One round: note landed snapshots, queue their missing epochs, launch what the priorities allow, collect
        finished tasks. False once nothing is left to do (or the sweep is stopping)."""
        if self.state.stopping():
            self.cancel()
            return False
        final = self.state.teachers_done  # read before the scan: a snapshot written before the end is seen
        self._scan_store()
        if final:
            self.state.final_scan = True
        self._launch()
        self._collect()
        # Once the teachers have ended, a snapshot still missing never lands in this run (resume retries it).
        to_land = self.snapshots - self.state.landed
        return bool(self.backlog or self.inflight or (to_land and not final))

    def run(self) -> None:
        """poll until done; a failure is handed to the state (the driver re-raises it)."""
        try:
            while self.poll():
                time.sleep(POLL_SECONDS)
        except BaseException as exc:  # noqa: BLE001 (re-raised by the driver's thread)
            self.cancel()
            self.state.fail(exc)

    def cancel(self) -> None:
        """Stop waiting for the tasks in flight. They are not ray.cancel()ed: cancelling a task that is completing
        crashed the driver's Ray core worker (Ray 2.60, "Tried to complete task that was not pending"); a task
        left to finish only writes its cache entry, atomically."""
        self.inflight.clear()

    def _scan_store(self) -> None:
        from .soft_labels import epochs_to_compute

        new = {s for s in self.snapshots - self.state.landed if self.store.has(*s)}
        for group in sorted(g for g in self.waiting if g[:2] in new):
            self.waiting.discard(group)
            path = self.store.path(*group[:2])
            missing = epochs_to_compute(self.cache, path, self.configs[group], self.epochs)
            now = time.time()
            self.log.append([self._record(group, e, now, now, cached=True) for e in self.epochs if e not in missing])
            if missing:
                self.todo[group] = set(missing)
                self.backlog.extend((group, e) for e in missing)
            else:
                self._ready(group)
        with self.state.lock:
            self.state.landed |= new

    def _ready(self, group) -> None:
        with self.state.lock:
            self.state.ready_groups.add(group)

    def _launch(self) -> None:
        import ray

        while self.backlog and self.state.may_start():
            if self._task is None:
                self._task = ray.remote(num_cpus=self.options.cpus_per_trial, num_gpus=self.gpus)(soft_label_task)
                self._data_ref = ray.put(self.data)
                self.started = time.time()
            group, epoch = self.backlog.popleft()
            ref = self._task.remote(self.cache.root, self.store.path(*group[:2]), self.configs[group],
                                    self._data_ref, epoch, self.gpus, self.options.device_settings())
            self.inflight[ref] = (group, epoch)
            with self.state.lock:
                self.state.tasks_live += 1

    def _collect(self) -> None:
        import ray

        if not self.inflight:
            return
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=POLL_SECONDS)
        for ref in done:
            group, epoch = self.inflight.pop(ref)
            with self.state.lock:
                self.state.tasks_live -= 1
            try:
                timing = ray.get(ref)
            except UsageError as exc:  # a task's SnapshotError arrives as a RayTaskError subclass of it
                raise UsageError(str(getattr(exc, "cause", None) or exc)) from None
            self.computed += not timing["cached"]
            self.ended = time.time()
            self.log.append([self._record(group, epoch, **timing)])
            self.todo[group].discard(epoch)
            if not self.todo[group]:
                del self.todo[group]
                self._ready(group)

    @staticmethod
    def _record(group, epoch: int, start: float, end: float, node: str | None = None, pid: int | None = None,
                cached: bool = False) -> dict:
        teacher_hash, snapshot, seed = group
        return {"teacher_hash": teacher_hash, "snapshot": snapshot, "seed": seed, "epoch": epoch,
                "start": start, "end": end, "node": node, "pid": pid, "cached": cached}

    def summary(self) -> str:
        took = f" in {self.ended - self.started:.1f}s" if self.started and self.ended else ""
        return (f"soft labels: {self.computed} teacher epochs for {len(self.configs)} snapshot x seed groups{took}, "
                f"shared by {self.sharers} students")


def soft_label_task(cache_root, snapshot_path, cfg, data, epoch: int, gpus: float, settings) -> dict:
    """Compute one student epoch's teacher logits into the cache (a Ray task); its timing for the log."""
    import os

    import ray

    from trainables.runtime import worker_device

    from .engine import set_threads
    from .soft_labels import SoftLabelCache, ensure_soft_labels

    start = time.time()
    set_threads(int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1)
    device = worker_device(gpus, settings)
    cache = SoftLabelCache(cache_root, settings.teacher_precision(device), device.type)
    computed = ensure_soft_labels(cache, snapshot_path, cfg, data, [epoch], device)
    return {"start": start, "end": time.time(), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "cached": not computed}
