"""Helpers shared by the sweep tests: a tiny space, reading trial results, running the CLI in a subprocess."""
import glob
import json
import os
import subprocess
import sys

# A quick-preset variant small enough for tests: 2 teachers x 2 snapshots x 2 alphas + 1 CE baseline = 9 students.
TINY = ["subset=400", "teacher_epochs=2", "snapshots=[1, 2]", "epochs=2", "kd_epochs=[0, 1]",
        "teacher_width=0.5", "student_width=0.25", "alpha=[0.5, 0.9]"]


def tiny_overrides(extra: list[str] = ()) -> dict:
    from search_spaces import parse_overrides

    return parse_overrides(TINY + list(extra))


def trial_results(stage_path: str) -> dict[str, list[dict]]:
    """trial folder name -> its result.json rows."""
    out = {}
    for path in sorted(glob.glob(os.path.join(stage_path, "*", "result.json"))):
        with open(path) as f:
            out[os.path.basename(os.path.dirname(path))] = [json.loads(line) for line in f if line.strip()]
    return out


def trial_statuses(stage_path: str) -> dict[str, str]:
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: t.status for t in ExperimentAnalysis(stage_path).trials}


def cli(args: list[str], **kwargs) -> subprocess.Popen:
    """`tune-eskd ARGS` in its own process group (so a test can SIGKILL it and every Ray process it started)."""
    return subprocess.Popen([sys.executable, "-m", "tune_eskd.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)
