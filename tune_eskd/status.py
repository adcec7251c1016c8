"""`tune-eskd status`: what a sweep has done and what is left, read from its files (no Ray needed): each
trial's trial.json and result.json (trial_files.py), as analysis reads them."""
import math

from .record import Experiment
from .progress import describe, flat_config, varying_keys
from .trial_files import stage_trials

FINISHED = ("TERMINATED", "ERROR")


def print_status(exp: Experiment) -> None:
    from search_spaces import build_space

    record = exp.read_record()
    space = build_space(record["space_name"], record["space"])
    n_teachers, n_students = space.trial_counts()
    print(f"experiment {exp.path} (space {record['space_name']}, scheduler {record['options']['scheduler']})")
    for stage, path, expected in (("teachers", exp.teachers_path, n_teachers), ("students", exp.students_path, n_students)):
        if not exp.stage_started(path):
            note = " (all snapshots were already in the store)" if stage == "teachers" and exp.stage_started(exp.students_path) else ""
            print(f"  {stage}: not started{note}; {expected} trials planned")
            continue
        trials = stage_trials(path)
        counts = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        left = sum(t.status not in FINISHED for t in trials)
        if stage == "students":  # a student not started yet has no folder; teachers in the store never start
            left += max(expected - len(trials), 0)
        state = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
        print(f"  {stage}: {len(trials)} trials: {state}; {left} left to run")
        scored = [t for t in trials if isinstance(t.last_result.get("val_acc"), float)
                  and not math.isnan(t.last_result["val_acc"])]
        if scored:
            best = max(scored, key=lambda t: t.last_result["val_acc"])
            keys = varying_keys([flat_config(t.config) for t in trials]) or ["model" if stage == "teachers" else "student_arch"]
            r = best.last_result
            print(f"    best so far: val_acc {r['val_acc']:.4f} test_acc {r['test_acc']:.4f} at epoch {r['epoch']} "
                  f"({describe(best.config, keys)})")
    from analysis.timeline import status_line  # where the workers' time went (EXP/timeline.png)

    line = status_line(exp.path)
    if line:
        print(line)
