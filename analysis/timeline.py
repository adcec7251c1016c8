"""A sweep's timeline: where the workers' time went, and how close the sweep came to its critical path.

Reads only files (no torch, no Ray), on a finished, running or interrupted sweep:
  EXP/teachers/<trial>/result.json   Tune's rows, one per teacher epoch (timestamp, time_this_iter_s, pid, node_ip)
  EXP/students/<trial>/result.json   the same, one row per student epoch
  EXP/soft_labels.jsonl              one line per soft-label task ({"teacher_hash", "snapshot", "seed", "epoch",
                                     "start", "end", "node", "pid", "cached"}); absent before pipelined sweeps
Bars are packed greedily into lanes, per node, so that a lane is one worker slot's history. A student that
ended before its last epoch (stopped by ASHA, or cut by an interruption or an error) is marked.

The critical-path lower bound is what the sweep would take with unlimited slots: the longest chain of
teacher epochs up to a student's snapshot, then that snapshot's longest soft-label task, then the student
(measured durations; with its teacher's last snapshot this is the longest teacher plus its longest student).

    from analysis.timeline import timeline_figure
    timeline_figure("/path/to/storage/my-study", "/path/to/storage/my-study/timeline.png")
"""
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field

from pyarrow import fs as pafs

from tune_eskd.blobs import filesystem, write_bytes

KINDS = {"teacher": ("teacher epoch", "#3b6ea8"), "soft_labels": ("soft-label task (snapshot/epoch)", "#e8a33d"),
         "student": ("student trial (teacher@snapshot)", "#5aa469")}
LANE_SLACK_S = 0.5    # result.json times are rebuilt from whole-second timestamps: overlaps this small are noise
CHAR_WIDTH = 0.0062   # the width of one character of bar text, as a fraction of the time axis


@dataclass
class Bar:
    kind: str             # a key of KINDS
    node: str
    pid: int | None
    start: float          # seconds since the epoch
    end: float
    texts: tuple = ()     # the first of these that fits is drawn inside the bar
    stopped: bool = False  # a student that ended before its last epoch
    cached: bool = False   # a soft-label task that found its entry in the cache
    lane: int = -1         # set by pack_lanes


@dataclass
class Timeline:
    bars: list[Bar]
    critical_path_s: float
    scheduler: str = "fifo"
    lanes: dict[str, int] = field(default_factory=dict)  # node -> number of lanes

    @property
    def start(self) -> float:
        return min(b.start for b in self.bars)

    @property
    def makespan_s(self) -> float:
        return max(b.end for b in self.bars) - self.start

    @property
    def busy_fraction(self) -> float:
        """Busy lane-seconds over lanes x makespan."""
        busy = sum(b.end - b.start for b in self.bars)
        return busy / max(1e-9, sum(self.lanes.values()) * self.makespan_s)


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def _json_lines(text: str | None) -> list[dict]:
    """The complete JSON lines of a file (a line cut by a crash mid-write is skipped)."""
    rows = []
    for line in (text or "").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _result_files(fs: pafs.FileSystem, stage: str) -> dict[str, list[dict]]:
    """trial folder -> its result.json rows."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(stage, allow_not_found=True))
    except OSError:
        return {}
    out = {}
    for info in infos:
        if info.type == pafs.FileType.Directory:
            rows = _json_lines(_read_text(fs, f"{info.path}/result.json"))
            if rows:
                out[info.base_name] = rows
    return out


def _runs(rows: list[dict]) -> list[list[int]]:
    """Indices of a trial's rows grouped by run: one process, until a restore starts counting again."""
    runs = []
    for i, r in enumerate(rows):
        if not runs or r.get("pid") != rows[runs[-1][-1]].get("pid") or r.get("iterations_since_restore", 2) == 1:
            runs.append([])
        runs[-1].append(i)
    return runs


def epoch_times(rows: list[dict]) -> list[tuple[float, float]]:
    """(start, end) of each row. Tune's `timestamp` is whole seconds, but `time_since_restore` is exact: within
    a run, the run's start lies in the window that every row's timestamp allows; take its middle (or its lower
    end when overheads between reports empty it), and clamp each end into its timestamp's second (a float
    timestamp is taken as exact)."""
    times = []
    for run in _runs(rows):
        run_rows = [rows[i] for i in run]
        whole = all(float(r["timestamp"]).is_integer() for r in run_rows)
        low = max(r["timestamp"] - r["time_since_restore"] for r in run_rows)
        high = min(r["timestamp"] + 1.0 - r["time_since_restore"] for r in run_rows)
        anchor = (low + high) / 2 if high > low else low
        for r in run_rows:
            end = float(r["timestamp"])
            if whole:
                end = min(max(anchor + r["time_since_restore"], end), end + 1.0)
            times.append((end - r["time_this_iter_s"], end))
    return times


def _last_per_epoch(rows: list[dict], times: list[tuple[float, float]]) -> dict[int, float]:
    """epoch -> duration of its last report (a resume may repeat an epoch; the last run is the one that counted)."""
    return {r.get("epoch", r.get("training_iteration")): end - start for r, (start, end) in zip(rows, times)}


def read_timeline(experiment_path: str) -> Timeline | None:
    """The bars and critical path of an experiment; None when nothing has reported yet."""
    fs, root = filesystem(experiment_path)
    record = json.loads(_read_text(fs, f"{root}/sweep.json") or "{}")
    options = record.get("options", {})
    teachers = _result_files(fs, f"{root}/teachers")
    students = _result_files(fs, f"{root}/students")
    # soft-label tasks name their node by Ray node id, trials also by IP: one lane group per node
    node_of_id = {r.get("node_id"): r.get("node_ip", "") for rows in (*teachers.values(), *students.values())
                  for r in rows}
    bars: list[Bar] = []

    teacher_epoch_s: dict[str, dict[int, float]] = {}   # teacher hash -> epoch -> seconds
    for trial, rows in teachers.items():
        times = epoch_times(rows)
        name = rows[0].get("config", {}).get("teacher", {}).get("model", "teacher")
        for r, (start, end) in zip(rows, times):
            epoch = r.get("epoch", r.get("training_iteration"))
            bars.append(Bar("teacher", r.get("node_ip", ""), r.get("pid"), start, end, (f"{name} e{epoch}", f"e{epoch}")))
        teacher_epoch_s.setdefault(rows[-1].get("teacher_hash", trial), {}).update(_last_per_epoch(rows, times))

    soft_s: dict[tuple, float] = defaultdict(float)  # (teacher hash, snapshot, seed) -> longest task
    for t in _json_lines(_read_text(fs, f"{root}/soft_labels.jsonl")):
        start, end = float(t["start"]), float(t["end"])
        key = (t.get("teacher_hash"), t.get("snapshot"), t.get("seed"))
        soft_s[key] = max(soft_s[key], end - start)
        if t.get("node") is None and t.get("cached"):  # found cached by the driver: no worker spent time on it
            continue
        bars.append(Bar("soft_labels", node_of_id.get(t.get("node"), str(t.get("node"))), t.get("pid"), start, end,
                        (f"e{t.get('snapshot')}/{t.get('epoch')}",), cached=bool(t.get("cached"))))

    chains = [sum(epochs.values()) for epochs in teacher_epoch_s.values()]
    for rows in students.values():
        times = epoch_times(rows)
        cfg = rows[0].get("config", {}).get("trial", {})
        last_epoch = min(cfg.get("epochs") or 10**9, options.get("max_t") or 10**9)
        snap = cfg.get("snapshot_epoch")
        texts = (f"{cfg.get('teacher_arch')}@e{snap}", f"@e{snap}") if snap is not None else ("CE only", "CE")
        runs = _runs(rows)
        for i, run in enumerate(runs):
            r = rows[run[-1]]
            bars.append(Bar("student", r.get("node_ip", ""), r.get("pid"), times[run[0]][0], times[run[-1]][1],
                            texts, stopped=i == len(runs) - 1 and r.get("epoch", 0) < last_epoch))
        student_s = sum(_last_per_epoch(rows, times).values())
        if snap is None:
            chains.append(student_s)
            continue
        to_snapshot = sum(s for e, s in teacher_epoch_s.get(cfg.get("teacher_hash"), {}).items() if e <= snap)
        chains.append(to_snapshot + soft_s.get((cfg.get("teacher_hash"), snap, cfg.get("seed")), 0.0) + student_s)
    if not bars:
        return None
    timeline = Timeline(bars, max(chains, default=0.0), options.get("scheduler", "fifo"))
    timeline.lanes = pack_lanes(bars)
    return timeline


def pack_lanes(bars: list[Bar]) -> dict[str, int]:
    """Assign each bar a lane of its node, greedily by start time: a free lane that last ran the same process
    (a reused actor or task worker) if there is one, else the free lane that became free last; a new lane only
    when none is free. Returns node -> lane count."""
    lanes: dict[str, list[tuple[float, int | None]]] = defaultdict(list)  # node -> [(end, pid) per lane]
    for bar in sorted(bars, key=lambda b: (b.start, b.end)):
        node_lanes = lanes[bar.node]
        free = [i for i, (end, _) in enumerate(node_lanes) if end <= bar.start + LANE_SLACK_S]
        same = [i for i in free if node_lanes[i][1] == bar.pid and bar.pid is not None]
        if same or free:
            bar.lane = same[0] if same else max(free, key=lambda i: node_lanes[i][0])
            node_lanes[bar.lane] = (max(bar.end, node_lanes[bar.lane][0]), bar.pid)
        else:
            bar.lane = len(node_lanes)
            node_lanes.append((bar.end, bar.pid))
    return {node: len(v) for node, v in lanes.items()}


def draw(timeline: Timeline):
    """The figure (matplotlib's object API, so no global pyplot state or backend is touched)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    nodes = sorted(timeline.lanes)
    offset, y_labels = {}, []
    for node in nodes:
        offset[node] = len(y_labels)
        y_labels += [(f"{node} " if len(nodes) > 1 else "") + f"slot {i + 1}" for i in range(timeline.lanes[node])]
    n_rows = len(y_labels)
    t0, span = timeline.start, timeline.makespan_s
    fig = Figure(figsize=(11, 1.9 + 0.32 * n_rows), layout="constrained")
    ax = fig.add_subplot()
    for bar in timeline.bars:
        y = offset[bar.node] + bar.lane
        colour = KINDS[bar.kind][1]
        width = max(bar.end - bar.start, span * 0.002)  # a cached task still shows as a sliver
        ax.barh(y, width, left=bar.start - t0, height=0.72, color=colour, edgecolor="white", linewidth=0.6,
                alpha=0.45 if bar.cached else 1.0, hatch="///" if bar.cached else None)
        text = next((t for t in bar.texts if (len(t) + 1.5) * CHAR_WIDTH * span < width), None)
        if text:
            ax.text(bar.start - t0 + width / 2, y, text, ha="center", va="center", fontsize=7, color="white",
                    clip_on=True)
        if bar.stopped:
            ax.plot(bar.end - t0, y, marker="X", color="#c0392b", markersize=7, markeredgecolor="white",
                    markeredgewidth=0.6, zorder=3)
    ax.axvline(timeline.critical_path_s, color="0.2", linestyle="--", linewidth=1)
    ax.axvline(span, color="0.2", linestyle="-", linewidth=1)
    ax.set_yticks(range(n_rows), y_labels, fontsize=8)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_xlim(0, max(span, timeline.critical_path_s) * 1.02)
    ax.set_xlabel("seconds since the first work started")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    stop_label = "stopped by ASHA" if timeline.scheduler == "asha" else "ended before its last epoch"
    kinds = {b.kind for b in timeline.bars}
    handles = [Patch(color=c, label=label) for kind, (label, c) in KINDS.items() if kind in kinds]
    if any(b.cached for b in timeline.bars):
        handles.append(Patch(facecolor=KINDS["soft_labels"][1], alpha=0.45, hatch="///", label="soft labels cached"))
    if any(b.stopped for b in timeline.bars):
        handles.append(Line2D([], [], marker="X", color="#c0392b", linestyle="none", label=stop_label))
    handles += [Line2D([], [], color="0.2", linestyle="--", label="critical-path lower bound"),
                Line2D([], [], color="0.2", label="makespan")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    cp = timeline.critical_path_s
    ax.set_title(f"makespan {span:.0f} s vs critical-path lower bound {cp:.0f} s ({span / max(cp, 1e-9):.2f}x); "
                 f"{n_rows} slots busy {timeline.busy_fraction:.0%} of the makespan", fontsize=10)
    return fig


def timeline_figure(experiment_path: str, out_png: str) -> str | None:
    """Draw the experiment's timeline into out_png (a local path or a storage URI); returns out_png, or None
    when no trial has reported yet (nothing is written then)."""
    timeline = read_timeline(experiment_path)
    if timeline is None:
        return None
    buf = io.BytesIO()
    draw(timeline).savefig(buf, format="png", dpi=130)
    write_bytes(*filesystem(out_png), buf.getvalue())
    return out_png


def status_line(experiment_path: str) -> str | None:
    """Draw EXP/timeline.png for `tune-eskd status` and say so; a note when it cannot be written (status on a
    read-only experiment still succeeds), None when no trial has reported yet."""
    out = f"{experiment_path.rstrip('/')}/timeline.png"
    try:
        written = timeline_figure(experiment_path, out)
    except OSError as exc:
        return f"  note: could not write the timeline {out}: {exc}"
    return f"  timeline: {written}" if written else None
