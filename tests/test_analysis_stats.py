"""Statistics against known values, and every figure drawn (not blank) from experiments written by hand in
the genuine file layout (no training: fast and exactly controlled, e.g. ASHA stops and an alpha x T grid)."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from analysis import stats
from analysis.figures import FIGURES, STOPPED, ce_vs_kd, final_by_snapshot, make_figures, teacher_curves, \
    teacher_vs_student
from analysis.findings import seed_noise_findings
from analysis.report import build_report
from analysis.tables import load

# ---------------------------------------------------------------------------------------------------------------
# t distribution, summaries, comparisons
# ---------------------------------------------------------------------------------------------------------------

# Two-sided 95% and 99% critical values from the standard t-table.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042, 120: 1.980,
       math.inf: 1.960}
T99 = {1: 63.657, 2: 9.925, 5: 4.032, 10: 3.169, 30: 2.750}


@pytest.mark.parametrize("df,value", sorted(T95.items()))
def test_t_critical_95(df, value):
    assert stats.t_critical(df) == pytest.approx(value, abs=6e-4)


@pytest.mark.parametrize("df,value", sorted(T99.items()))
def test_t_critical_99(df, value):
    assert stats.t_critical(df, 0.99) == pytest.approx(value, abs=6e-4)


def test_t_tail_probabilities():
    assert 2 * stats.t_sf(2.0, 5) == pytest.approx(0.101939, abs=1e-6)
    assert 2 * stats.t_sf(2.228139, 10) == pytest.approx(0.05, abs=1e-6)
    assert stats.t_sf(0.0, 7) == pytest.approx(0.5)
    assert stats.t_sf(-1.0, 3) == pytest.approx(1 - stats.t_sf(1.0, 3))
    assert stats.t_sf(1.0, 1) == pytest.approx(0.25)          # Cauchy: 1/2 - atan(1)/pi
    assert stats.t_sf(1.5, 2.5) > stats.t_sf(1.5, 30)         # heavier tails at fewer df (fractional df ok)


def test_summary_of_known_numbers():
    s = stats.summary([1, 2, 3, 4])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(1.2909944)
    assert s.sem == pytest.approx(0.6454972)
    assert s.ci_low == pytest.approx(2.5 - 3.182446 * 0.6454972, abs=1e-6)
    assert s.ci_high == pytest.approx(2.5 + 3.182446 * 0.6454972, abs=1e-6)
    one = stats.summary([0.7, float("nan")])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert stats.summary([]).n == 0


def test_aggregate_keeps_blank_groups():
    df = pd.DataFrame({"snapshot_epoch": pd.array([1, 1, 2, 2, None, None], dtype="Int64"),
                       "final_test_acc": [0.5, 0.7, 0.8, 0.8, 0.6, 0.62]})
    agg = stats.aggregate(df, "snapshot_epoch")
    assert len(agg) == 3 and str(agg["snapshot_epoch"].dtype) == "Int64"
    row = agg[agg["snapshot_epoch"] == 1].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["n"] == 2
    assert row["ci_half"] == pytest.approx(12.706205 * 0.1414214 / math.sqrt(2), rel=1e-5)
    blank = agg[agg["snapshot_epoch"].isna()].iloc[0]
    assert blank["mean"] == pytest.approx(0.61)
    assert agg[agg["snapshot_epoch"] == 2].iloc[0]["std"] == 0


def test_welch_comparison_known_values():
    c = stats.compare([0.80, 0.81, 0.79], [0.75, 0.76, 0.74], "snapshot e3", "snapshot e6")
    # equal variances 1e-4, n=3 each: se = sqrt(2e-4/3), df = 4, t = 0.05 / se
    se = math.sqrt(2e-4 / 3)
    assert c.diff == pytest.approx(0.05) and c.df == pytest.approx(4.0)
    assert c.t == pytest.approx(0.05 / se)
    assert c.ci_high - c.diff == pytest.approx(2.776445 * se, rel=1e-5)
    u = c.t / math.sqrt(4 + c.t ** 2)            # closed-form t CDF for df = 4
    assert c.p == pytest.approx(2 * (0.5 - 0.5 * u * (1.5 - 0.5 * u * u)), rel=1e-8)
    assert c.p == pytest.approx(0.0036022, abs=1e-7)
    assert c.exceeds_noise and "exceeds seed noise, snapshot e3 is better" in c.text
    # unequal variances and sizes: Welch-Satterthwaite degrees of freedom
    a, b = [0.1, 0.3, 0.2, 0.4], [0.25, 0.26]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 2
    c = stats.compare(a, b)
    assert c.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 1))
    assert c.verdict == "within seed noise" and "not a finding" in c.text


def test_comparison_needs_two_seeds():
    c = stats.compare([0.9], [0.5], "A", "B")
    assert c.verdict == "too few seeds" and not c.exceeds_noise and "not a finding" in c.text


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == [True, False, False, False]
    assert stats.holm([0.001, 0.01, 0.02]) == [True, True, True]


def test_best_configs_select_on_validation_only():
    df = pd.DataFrame({"trial_id": list("abcd"), "alpha": [0.5, 0.5, 0.9, 0.9], "seed": [0, 1, 0, 1],
                       "final_val_acc": [0.6, 0.62, 0.7, 0.66], "final_test_acc": [0.9, 0.9, 0.5, 0.5]})
    best = stats.best_configs(df, "final_val_acc", top=1)
    assert best.iloc[0]["alpha"] == 0.9 and best.iloc[0]["n"] == 2
    assert best.iloc[0]["final_test_acc_mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="validation"):
        stats.best_configs(df, "final_test_acc")


# ---------------------------------------------------------------------------------------------------------------
# hand-written experiments in the genuine layout
# ---------------------------------------------------------------------------------------------------------------

TEACHERS = {"aaaa00000008": "resnet8", "bbbb00000014": "resnet14"}
SNAPSHOTS = [1, 2, 4]


def _accuracy(rng, base, epoch, epochs):
    return float(np.clip(base * (0.5 + 0.5 * epoch / epochs) + rng.normal(0, 0.01), 0, 1))


def write_experiment(storage, name="x", seeds=(0, 1, 2), alphas=(0.5, 0.9), temps=(2.0, 4.0), kd=(0, 2),
                     epochs=4, scheduler="asha", stopped_snapshots=()):
    """A finished sweep as tune-eskd lays it out: sweep.json, the snapshot store's metadata and teacher.json,
    and a students stage with experiment_state and one result.json per trial. ASHA stops about a third of
    the KD students after 3 epochs, or (with stopped_snapshots) every KD student of those snapshots."""
    rng = np.random.default_rng(0)
    exp = os.path.join(storage, name)
    students = os.path.join(exp, "students")
    os.makedirs(students)
    space = {"description": "", "num_samples": 1, "dataset": "synthetic", "data_dir": None, "subset": 600,
             "val_split": 0.1, "split_seed": 0, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4,
             "nesterov": False, "schedule": "multistep", "gamma": 0.1, "teacher_arch": list(TEACHERS.values()),
             "teacher_width": 1.0, "teacher_epochs": 4, "teacher_lr": 0.1, "teacher_seed": 0,
             "snapshots": SNAPSHOTS, "student_arch": "resnet8", "student_width": 0.5, "epochs": epochs, "lr": 0.1,
             "kd_epochs": list(kd), "alpha": list(alphas), "temperature": list(temps), "seed": list(seeds)}
    with open(os.path.join(exp, "sweep.json"), "w") as f:
        json.dump({"space_name": "quick", "space": space, "options": {"storage": storage, "name": name,
                   "scheduler": scheduler, "grace_period": None, "max_t": None},
                   "versions": {"tune_eskd": "0.1.0", "torch": "x", "ray": "2.60.0"}}, f)
    for h, arch in TEACHERS.items():
        d = os.path.join(storage, "snapshots", h)
        os.makedirs(d)
        history = []
        for e in range(1, 5):
            acc = 0.3 + 0.1 * e + (0.05 if arch == "resnet14" else 0)
            history.append({"epoch": e, "phase": "ce", "lr": 0.1, "train_loss": 2 - 0.3 * e, "train_acc": acc,
                            "val_acc": acc, "test_acc": acc - 0.02, "epoch_seconds": 1.0, "images_per_sec": 500.0})
            if e in SNAPSHOTS:
                with open(os.path.join(d, f"epoch_{e:03d}.json"), "w") as f:
                    json.dump({"arch": arch, "width": 1.0, "num_classes": 10, "epoch": e, "val_acc": acc,
                               "test_acc": acc - 0.02, "teacher_hash": h, "sha256": "0" * 64,
                               "config": {"model": arch, "seed": 0, "lr": 0.1, "epochs": 4}}, f)
        with open(os.path.join(d, "teacher.json"), "w") as f:
            json.dump({"teacher_hash": h, "config": {"model": arch, "snapshots": SNAPSHOTS}, "history": history}, f)
    rows = []
    for seed in seeds:
        for k in kd:
            if k == 0:
                rows.append({"kd_epochs": 0, "seed": seed, "teacher_hash": None, "teacher_arch": None,
                             "snapshot_epoch": None, "alpha": None, "temperature": None})
                continue
            for h, arch in TEACHERS.items():
                for s in SNAPSHOTS:
                    for a in alphas:
                        for t in temps:
                            rows.append({"kd_epochs": k, "seed": seed, "teacher_hash": h, "teacher_arch": arch,
                                         "snapshot_epoch": s, "alpha": a, "temperature": t})
    trial_data = []
    for i, row in enumerate(rows):
        tid = f"abcde_{i:05d}"
        config = {"trial": {"dataset": "synthetic", "data_dir": None, "subset": 600, "student_arch": "resnet8",
                            "student_width": 0.5, "epochs": epochs, "lr": 0.1, "soft_labels": False, **row}}
        stop = scheduler == "asha" and row["kd_epochs"] and (
            row["snapshot_epoch"] in stopped_snapshots if stopped_snapshots else i % 3 == 0)
        run = 3 if stop else epochs
        base = 0.6 + (0.02 * row["snapshot_epoch"] if row["snapshot_epoch"] else 0.03) + (
            0.02 if row["teacher_arch"] == "resnet14" else 0) - (0.03 * (row["alpha"] or 0))
        os.makedirs(os.path.join(students, tid))
        with open(os.path.join(students, tid, "result.json"), "w") as f:
            for e in range(1, run + 1):
                f.write(json.dumps({"epoch": e, "phase": "kd" if e <= row["kd_epochs"] else "ce", "lr": 0.1,
                                    "train_loss": 1.0, "train_acc": 0.5, "val_acc": _accuracy(rng, base, e, epochs),
                                    "test_acc": _accuracy(rng, base, e, epochs), "epoch_seconds": 1.0,
                                    "images_per_sec": 400.0, "node_id": "n1", "done": False,
                                    "training_iteration": e, "trial_id": tid, "time_total_s": 1.0 * e,
                                    "config": config}) + "\n")
        trial_data.append([json.dumps({"trial_id": tid, "status": "TERMINATED", "config": config,
                                       "relative_logdir": tid}), json.dumps({"num_failures": 0})])
    with open(os.path.join(students, "experiment_state-2026-01-01_00-00-00.json"), "w") as f:
        json.dump({"trial_data": trial_data, "runner_data": {}, "stats": {}}, f)
    return exp


def _not_blank(png_path):
    import matplotlib.image as mpimg

    img = mpimg.imread(png_path)
    colors = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return len(colors) > 20 and img[..., :3].std() > 0.02


@pytest.fixture(scope="module")
def asha_exp(tmp_path_factory):
    return write_experiment(str(tmp_path_factory.mktemp("asha")))


def test_hand_written_experiment_tables(asha_exp):
    t = load(asha_exp, teacher_stats=False)
    n_kd = 3 * 2 * 3 * 2 * 2
    assert len(t.trials) == n_kd + 3 and len(t.teachers) == 6 and len(t.teacher_epochs) == 8
    stopped = t.trials["stopped_by_asha"]
    expected = (t.trials["trial_id"].str[-5:].astype(int) % 3 == 0) & (t.trials["kd_epochs"] > 0)
    assert stopped.any() and (stopped == expected).all()
    assert (t.trials.loc[stopped, "epochs_run"] == 3).all() and (t.trials.loc[~stopped, "epochs_run"] == 4).all()
    assert (t.trials.loc[stopped, "status"] == "TERMINATED").all()
    done = stats.completed(t.trials)
    assert len(done) == len(t.trials) - stopped.sum()


def test_every_figure_is_drawn_and_not_blank(asha_exp, tmp_path):
    t = load(asha_exp, teacher_stats=False)
    results = make_figures(t, str(tmp_path / "figs"))
    assert [r.name for r in results] == [name for name, *_ in FIGURES]
    for r in results:
        assert r.skipped is None, (r.name, r.skipped)
        assert os.path.getsize(r.svg_path) > 1000
        assert _not_blank(r.png_path), r.name


def test_figures_skip_cleanly_and_report_says_why(tmp_path):
    exp = write_experiment(str(tmp_path), seeds=(0,), alphas=(0.9,), temps=(4.0,), kd=(2,), scheduler="fifo")
    t = load(exp, teacher_stats=False)
    skipped = {r.name: r.skipped for r in make_figures(t)}
    assert "fixed" in skipped["alpha_temperature"]
    assert "without ASHA" in skipped["asha_epochs"]
    assert "CE-only baseline" in skipped["ce_vs_kd"]
    assert skipped["final_by_snapshot"] is None and skipped["teacher_curves"] is None


def test_one_seed_report_says_nothing_is_a_finding(tmp_path):
    exp = write_experiment(str(tmp_path), seeds=(0,), alphas=(0.9,), temps=(4.0,), kd=(0, 2), scheduler="fifo")
    t = load(exp, teacher_stats=False)
    f = seed_noise_findings(t, stats.completed(t.trials))
    assert "single seed" in f.headline and "no difference" in f.headline
    assert all(c.verdict == "too few seeds" for c in f.comparisons)
    path = build_report(exp, t)
    with open(path) as fh:
        html = fh.read()
    assert "single seed" in html and "Not drawn" in html and "data:image/png;base64," in html
    with open(os.path.join(exp, "report", "report.md")) as fh:
        md = fh.read()
    assert "can be called a finding" in md


def test_several_seeds_findings(asha_exp):
    t = load(asha_exp, teacher_stats=False)
    f = seed_noise_findings(t, stats.completed(t.trials))
    assert "Seed-to-seed standard deviation" in f.headline and f.comparisons
    assert len(f.holm) == len(f.comparisons)
    assert {c.verdict for c in f.comparisons} <= {"exceeds seed noise", "within seed noise"}
    # a large built-in effect (0.03 * alpha and +0.02 per snapshot epoch) with noise 0.01 shows up
    assert f.exceeding


# ---------------------------------------------------------------------------------------------------------------
# students ASHA stopped early: drawn hollow, never in the means
# ---------------------------------------------------------------------------------------------------------------

def _stopped_points(fig) -> np.ndarray:
    """The (x, y) of every ASHA-stopped student a figure drew."""
    offsets = [c.get_offsets() for ax in fig.axes for c in ax.collections if c.get_label() == STOPPED]
    return np.vstack(offsets) if offsets else np.empty((0, 2))


def _texts(fig) -> str:
    ax = fig.axes[0]
    return "\n".join([t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_legend().get_texts()])


def test_stopped_students_are_drawn_hollow_outside_the_means(asha_exp):
    t = load(asha_exp, teacher_stats=False)
    stopped = t.trials[t.trials["stopped_by_asha"]]
    assert len(stopped) and (stopped["method"] == "KD").all()
    summ = stats.snapshot_summary(stats.completed(t.trials), "final_test_acc", "final_val_acc")
    for fn in (final_by_snapshot, teacher_vs_student, ce_vs_kd):
        fig = fn(t)
        points = _stopped_points(fig)
        assert len(points) == len(stopped), fn.__name__
        # at the accuracy of the last epoch they ran
        assert sorted(points[:, 0 if fn is ce_vs_kd else 1]) == pytest.approx(sorted(100 * stopped["final_test_acc"]))
        text = _texts(fig)
        assert "stopped by ASHA after 3 epochs (accuracy at its last epoch)" in text, fn.__name__
        assert f"hollow markers: {len(stopped)} students stopped early by ASHA" in text, fn.__name__
    # the means drawn are those of the completed students only
    fig = final_by_snapshot(t)
    means = np.concatenate([c.lines[0].get_ydata() for c in fig.axes[0].containers])
    kd = summ[summ["teacher_hash"].notna()]
    assert sorted(means) == pytest.approx(sorted(100 * kd["mean"]))


def test_snapshot_whose_students_asha_all_stopped_still_shows(tmp_path):
    # as in the quick demo sweep: ASHA stops every student of the immature snapshots e1 and e2
    exp = write_experiment(str(tmp_path), seeds=(0,), alphas=(0.5, 0.9), temps=(4.0,), kd=(0, 2),
                           stopped_snapshots=(1, 2))
    t = load(exp, teacher_stats=False)
    early = t.trials[t.trials["snapshot_epoch"].isin([1, 2])]
    assert early["stopped_by_asha"].all() and len(early) == 8

    fig = final_by_snapshot(t)
    ax = fig.axes[0]
    assert [x.get_text() for x in ax.get_xticklabels()] == ["e1", "e2", "e4"]
    points = _stopped_points(fig)
    assert len(points) == 8 and set(np.round(points[:, 0]).astype(int)) == {1, 2}
    assert all(np.round(c.lines[0].get_xdata()).tolist() == [4] for c in ax.containers)   # means: e4 only

    fig = teacher_vs_student(t)
    assert len(_stopped_points(fig)) == 8
    tags = sorted(x.get_text() for x in fig.axes[0].texts if x.get_text().startswith("e"))
    assert tags == ["e1", "e1", "e2", "e2", "e4", "e4"]    # every snapshot of both teachers is labelled

    fig = ce_vs_kd(t)
    rows = [x.get_text() for x in fig.axes[0].get_yticklabels()]
    assert rows == ["CE-only (no teacher)"] + [f"ResNet-{d} teacher, snapshot e{e}" for d in (8, 14) for e in (1, 2, 4)]
    assert len(_stopped_points(fig)) == 8


def test_no_hollow_markers_without_asha(tmp_path):
    exp = write_experiment(str(tmp_path), seeds=(0, 1), alphas=(0.9,), temps=(4.0,), kd=(0, 2), scheduler="fifo")
    t = load(exp, teacher_stats=False)
    for fn in (final_by_snapshot, teacher_vs_student, ce_vs_kd):
        fig = fn(t)
        assert len(_stopped_points(fig)) == 0 and "ASHA" not in _texts(fig), fn.__name__


def test_teacher_curve_snapshot_tags_do_not_collide(asha_exp):
    t = load(asha_exp, teacher_stats=False)
    fig = teacher_curves(t)
    fig.canvas.draw()
    texts = fig.axes[0].texts
    assert sorted(x.get_text() for x in texts) == ["e1", "e2", "e4"]       # one tag per snapshot epoch
    boxes = [x.get_window_extent() for x in texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
