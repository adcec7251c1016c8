"""analysis.timeline: times rebuilt from Tune's rows, lanes, stopped students, the critical path, the PNG."""
import json
import os
import subprocess
import sys

import pytest

from analysis.timeline import Bar, epoch_times, pack_lanes, read_timeline, status_line, timeline_figure

T0 = 1_800_000_000.0


def rows_for(ends: list[float], durations: list[float], pid=11, node="10.0.0.1", restore_at=(), **extra) -> list[dict]:
    """Tune-style result.json rows of epochs ending at `ends` (seconds after T0): whole-second timestamps,
    exact time_this_iter_s and time_since_restore (which a restore at an epoch in `restore_at` resets)."""
    rows, since, it = [], 0.0, 0
    for epoch, (end, d) in enumerate(zip(ends, durations), start=1):
        if epoch in restore_at:
            since, it, pid = 0.0, 0, pid + 1
        since += d
        it += 1
        rows.append({"epoch": epoch, "training_iteration": epoch, "timestamp": int(T0 + end), "time_this_iter_s": d,
                     "time_since_restore": since, "iterations_since_restore": it, "pid": pid, "node_ip": node,
                     "node_id": f"id-{node}", **extra})
    return rows


def write_trial(stage_dir: str, trial: str, rows: list[dict]) -> None:
    os.makedirs(os.path.join(stage_dir, trial), exist_ok=True)
    with open(os.path.join(stage_dir, trial, "result.json"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_epoch_times_recover_sub_second_ends_from_whole_second_timestamps():
    ends, durations = [2.3, 4.1, 6.75], [2.3, 1.8, 2.65]
    times = epoch_times(rows_for(ends, durations))
    for (start, end), true_end, d in zip(times, ends, durations):
        assert end == pytest.approx(T0 + true_end, abs=0.1)   # the timestamps alone are off by up to 0.75 s here
        assert end - start == pytest.approx(d)


def test_epoch_times_split_runs_at_a_restore():
    # epochs 1-2 in one process, then the driver died; epoch 3 reran in a new process 100 s later
    times = epoch_times(rows_for([2.5, 5.0, 105.4], [2.5, 2.5, 3.0], restore_at=(3,)))
    assert times[2][0] == pytest.approx(T0 + 102.4, abs=0.5)
    assert times[1][1] == pytest.approx(T0 + 5.0, abs=0.5)  # one run across the restore would put it at 6


def test_pack_lanes_reuses_a_free_slot_and_opens_one_only_for_overlap():
    bars = [Bar("teacher", "a", 1, 0, 10), Bar("student", "a", 2, 1, 5), Bar("student", "a", 3, 5.5, 9),
            Bar("student", "a", 1, 10.2, 12), Bar("student", "b", 4, 0, 12)]
    assert pack_lanes(bars) == {"a": 2, "b": 1}
    assert [b.lane for b in bars] == [0, 1, 1, 0, 0]  # the 4th bar follows its own process (pid 1) on lane 0


def make_experiment(root: str, soft_labels: bool = True) -> str:
    """A fabricated sweep: a 3-epoch teacher (snapshots 1 and 3), a student of each snapshot (the snapshot-3 one
    stopped by ASHA after 1 of 2 epochs) and a CE-only student, on two slots of one node."""
    exp = os.path.join(root, "exp")
    os.makedirs(exp)
    with open(os.path.join(exp, "sweep.json"), "w") as f:
        json.dump({"options": {"scheduler": "asha", "max_t": None}}, f)
    write_trial(os.path.join(exp, "teachers"), "t_0", rows_for(
        [4.0, 8.0, 12.0], [4.0, 4.0, 4.0], pid=10, teacher_hash="h1", config={"teacher": {"model": "resnet56"}}))
    student = {"epochs": 2, "teacher_hash": "h1", "teacher_arch": "resnet56", "seed": 0}
    write_trial(os.path.join(exp, "students"), "s_0", rows_for(
        [7.0, 10.0], [2.0, 3.0], pid=20, config={"trial": {**student, "snapshot_epoch": 1}}))
    write_trial(os.path.join(exp, "students"), "s_1", rows_for(
        [16.0], [2.5], pid=20, config={"trial": {**student, "snapshot_epoch": 3}}))
    write_trial(os.path.join(exp, "students"), "s_2", rows_for(
        [16.0, 17.0], [1.0, 1.0], pid=21, config={"trial": {**student, "snapshot_epoch": None, "teacher_hash": None}}))
    if soft_labels:
        with open(os.path.join(exp, "soft_labels.jsonl"), "w") as f:
            for snap, start, end, cached in ((1, 4.2, 4.9, False), (3, 12.1, 13.5, False), (3, 12.1, 12.1, True)):
                f.write(json.dumps({"teacher_hash": "h1", "snapshot": snap, "seed": 0, "epoch": 1, "start": T0 + start,
                                    "end": T0 + end, "node": "id-10.0.0.1", "pid": 30, "cached": cached}) + "\n")
            f.write('{"teacher_hash": "h1", "snap')  # a line cut by a crash mid-write is skipped
    return exp


def test_read_timeline_bars_stopped_students_and_critical_path(tmp_path):
    timeline = read_timeline(make_experiment(str(tmp_path)))
    kinds = [b.kind for b in timeline.bars]
    assert kinds.count("teacher") == 3 and kinds.count("soft_labels") == 3 and kinds.count("student") == 3
    stopped = [b for b in timeline.bars if b.stopped]
    assert len(stopped) == 1 and stopped[0].texts[-1] == "@e3"
    # soft-label tasks report a node id; they land in the trials' node (by IP), not in a node of their own
    assert set(timeline.lanes) == {"10.0.0.1"}
    # longest chain: teacher to snapshot 3 (12 s) + its soft labels (1.4 s) + the student (2.5 s)
    assert timeline.critical_path_s == pytest.approx(12.0 + 1.4 + 2.5)
    assert timeline.makespan_s == pytest.approx(17.0, abs=0.5)  # whole-second timestamps
    assert 0 < timeline.busy_fraction <= 1


def test_without_soft_label_file_the_bound_skips_soft_labels(tmp_path):
    timeline = read_timeline(make_experiment(str(tmp_path), soft_labels=False))
    assert {b.kind for b in timeline.bars} == {"teacher", "student"}
    assert timeline.critical_path_s == pytest.approx(12.0 + 2.5)


def test_timeline_figure_writes_a_png_and_needs_neither_torch_nor_ray(tmp_path):
    exp = make_experiment(str(tmp_path))
    out = str(tmp_path / "figs" / "timeline.png")
    code = ("import sys; from analysis.timeline import timeline_figure; "
            f"print(timeline_figure({exp!r}, {out!r})); "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'analysis imported torch or ray'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == out
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_timeline_figure_of_a_sweep_with_no_reports_writes_nothing(tmp_path):
    os.makedirs(tmp_path / "exp" / "students" / "s_0")
    assert timeline_figure(str(tmp_path / "exp"), str(tmp_path / "t.png")) is None
    assert not (tmp_path / "t.png").exists()


def test_status_writes_the_timeline(tmp_path, capsys):
    from search_spaces import load_space
    from tune_eskd import status

    exp = make_experiment(str(tmp_path))
    with open(os.path.join(exp, "sweep.json")) as f:
        record = json.load(f)
    record.update(space_name="quick", space=load_space("quick").values)
    with open(os.path.join(exp, "sweep.json"), "w") as f:
        json.dump(record, f)
    status.print_status(status.Experiment.at(exp))
    assert f"timeline: {exp}/timeline.png" in capsys.readouterr().out
    assert os.path.getsize(os.path.join(exp, "timeline.png")) > 1000


def test_status_line_notes_a_timeline_it_cannot_write(tmp_path):
    exp = make_experiment(str(tmp_path))
    os.makedirs(os.path.join(exp, "timeline.png"))  # a folder where the PNG goes: writing it fails
    assert status_line(exp).startswith(f"  note: could not write the timeline {exp}/timeline.png: ")
