"""Statistics against known values, and every figure drawn (not blank) from experiments written by hand in
the genuine file layout (no training: fast and exactly controlled, e.g. ASHA stops and an alpha x T grid)."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import present, stats
from analysis.figures import FIGURES, STOPPED, ce_vs_kd, final_by_snapshot, make_figures, teacher_curves, \
    teacher_vs_student
from analysis.findings import seed_noise_findings
from analysis.importance import importance
from analysis.report import build_report
from analysis.tables import eval_image_count, load
from tune_eskd.errors import UsageError

# ---------------------------------------------------------------------------------------------------------------
# summaries and comparisons (the t distribution itself is scipy's)
# ---------------------------------------------------------------------------------------------------------------

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
                       "seed": [0, 1, 0, 1, 0, 1], "final_test_acc": [0.5, 0.7, 0.8, 0.8, 0.6, 0.62]})
    agg = stats.aggregate(df, "snapshot_epoch")
    assert len(agg) == 3 and str(agg["snapshot_epoch"].dtype) == "Int64"
    row = agg[agg["snapshot_epoch"] == 1].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["n"] == 2
    assert row["ci_half"] == pytest.approx(12.706205 * 0.1414214 / math.sqrt(2), rel=1e-5)
    blank = agg[agg["snapshot_epoch"].isna()].iloc[0]
    assert blank["mean"] == pytest.approx(0.61)
    assert agg[agg["snapshot_epoch"] == 2].iloc[0]["std"] == 0
    # rows without seeds cannot be counted as seeds: refused in one line
    with pytest.raises(UsageError, match="seed"):
        stats.aggregate(df.drop(columns="seed"), "snapshot_epoch")


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
    assert c.test == "Welch t-test" and not c.paired and "(Welch t-test)" in c.text
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
                     epochs=4, scheduler="asha", stopped_snapshots=(), teacher_seeds=(0,)):
    """A finished sweep as tune-eskd lays it out: sweep.json, the snapshot store's metadata and teacher.json,
    and a students stage with one params.json and result.json per trial (no trial.json: the layout of an experiment
    from before tune-eskd wrote it). ASHA (as Ray's does) stops single
    seeds after 3 epochs: every seed of a third of the KD configs, the first seed only of another third; or (with
    stopped_snapshots) every KD student of those snapshots. Each teacher seed is its own teacher (hash)."""
    rng = np.random.default_rng(0)
    exp = os.path.join(storage, name)
    students = os.path.join(exp, "students")
    os.makedirs(students)
    space = {"description": "", "num_samples": 1, "dataset": "synthetic", "data_dir": None, "subset": 600,
             "val_split": 0.1, "split_seed": 0, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4,
             "nesterov": False, "schedule": "multistep", "gamma": 0.1, "teacher_arch": list(TEACHERS.values()),
             "teacher_width": 1.0, "teacher_epochs": 4, "teacher_lr": 0.1, "teacher_seed": list(teacher_seeds),
             "snapshots": SNAPSHOTS, "student_arch": "resnet8", "student_width": 0.5, "epochs": epochs, "lr": 0.1,
             "kd_epochs": list(kd), "alpha": list(alphas), "temperature": list(temps), "seed": list(seeds)}
    with open(os.path.join(exp, "sweep.json"), "w") as f:
        json.dump({"space_name": "quick", "space": space, "options": {"storage": storage, "name": name,
                   "scheduler": scheduler, "grace_period": None, "max_t": None},
                   "versions": {"tune_eskd": "0.1.0", "torch": "x", "ray": "2.60.0"}}, f)
    teachers = {f"{h[:-2]}{ts:02d}": (arch, ts) for h, arch in TEACHERS.items() for ts in teacher_seeds}
    for h, (arch, teacher_seed) in teachers.items():
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
                               "config": {"model": arch, "seed": teacher_seed, "lr": 0.1, "epochs": 4}}, f)
        with open(os.path.join(d, "teacher.json"), "w") as f:
            json.dump({"teacher_hash": h, "config": {"model": arch, "snapshots": SNAPSHOTS}, "history": history}, f)
    rows = []
    for seed in seeds:
        for k in kd:
            if k == 0:
                rows.append({"kd_epochs": 0, "seed": seed, "teacher_hash": None, "teacher_arch": None,
                             "snapshot_epoch": None, "alpha": None, "temperature": None})
                continue
            for h, (arch, _) in teachers.items():
                for s in SNAPSHOTS:
                    for a in alphas:
                        for t in temps:
                            rows.append({"kd_epochs": k, "seed": seed, "teacher_hash": h, "teacher_arch": arch,
                                         "snapshot_epoch": s, "alpha": a, "temperature": t})
    per_seed = len(rows) // len(seeds)
    for i, row in enumerate(rows):
        config_index = i % per_seed
        tid = f"abcde_{i:05d}"
        config = {"trial": {"dataset": "synthetic", "data_dir": None, "subset": 600, "student_arch": "resnet8",
                            "student_width": 0.5, "epochs": epochs, "lr": 0.1, "soft_labels": False, **row}}
        stop = scheduler == "asha" and row["kd_epochs"] and (
            row["snapshot_epoch"] in stopped_snapshots if stopped_snapshots else
            config_index % 3 == 0 or (config_index % 3 == 1 and row["seed"] == seeds[0]))
        run = 3 if stop else epochs
        base = 0.6 + (0.02 * row["snapshot_epoch"] if row["snapshot_epoch"] else 0.03) + (
            0.02 if row["teacher_arch"] == "resnet14" else 0) - (0.03 * (row["alpha"] or 0))
        os.makedirs(os.path.join(students, tid))
        with open(os.path.join(students, tid, "result.json"), "w") as f:
            for e in range(1, run + 1):
                f.write(json.dumps({"epoch": e, "phase": "kd" if e <= row["kd_epochs"] else "ce", "lr": 0.1,
                                    "train_loss": 1.0, "train_acc": 0.5, "val_acc": _accuracy(rng, base, e, epochs),
                                    "test_acc": _accuracy(rng, base, e, epochs), "epoch_seconds": 1.0,
                                    "images_per_sec": 400.0, "node_id": "n1", "done": e == run,
                                    "training_iteration": e, "trial_id": tid, "time_total_s": 1.0 * e,
                                    # Tune's timing: two trials at a time, one second an epoch
                                    "timestamp": 1767225600 + 5 * (i // 2) + e, "time_this_iter_s": 1.0,
                                    "time_since_restore": 1.0 * e, "pid": 1000 + i % 2, "node_ip": "10.0.0.1",
                                    "config": config}) + "\n")
        with open(os.path.join(students, tid, "params.json"), "w") as f:
            json.dump(config, f)
    return exp


def _not_blank(png_path):
    import matplotlib.image as mpimg

    img = mpimg.imread(png_path)
    colors = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return len(colors) > 20 and img[..., :3].std() > 0.02


@pytest.fixture(scope="module")
def asha_exp(tmp_path_factory):
    return write_experiment(str(tmp_path_factory.mktemp("asha")))


def _config_index(trials):
    return trials["trial_id"].str[-5:].astype(int) % 25       # 25 trials per seed: 1 CE-only + 24 KD configs


def test_hand_written_experiment_tables(asha_exp):
    t = load(asha_exp, teacher_stats=False)
    n_kd = 3 * 2 * 3 * 2 * 2
    assert len(t.trials) == n_kd + 3 and len(t.teachers) == 6 and len(t.teacher_epochs) == 8
    stopped = t.trials["stopped_by_asha"]
    kd, j = t.trials["kd_epochs"] > 0, _config_index(t.trials)
    expected = kd & ((j % 3 == 0) | ((j % 3 == 1) & (t.trials["seed"] == 0)))
    assert stopped.any() and (stopped == expected).all()
    assert (t.trials.loc[stopped, "epochs_run"] == 3).all() and (t.trials.loc[~stopped, "epochs_run"] == 4).all()
    assert (t.trials.loc[stopped, "status"] == "TERMINATED").all()
    # the flag: a config is complete only when every seed ran all its epochs
    assert (t.trials["config_complete"] == (~kd | (j % 3 == 2))).all()
    done = stats.completed(t.trials)
    assert len(done) == 3 + 8 * 3 and done["config_complete"].all()
    # accuracies are counts over the evaluation images: read off the tables (written here as float noise: unknown)
    assert t.trials["val_images"].isna().all()


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
    assert "only 6 students of complete configs" in skipped["importance"] and "at least 16" in skipped["importance"]


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
    # the stopped students and the survivors of their configs: none is in a mean
    left_out = t.trials[~t.trials["config_complete"]]
    assert left_out["stopped_by_asha"].any() and (~left_out["stopped_by_asha"]).any()
    assert (left_out["method"] == "KD").all()
    summ = stats.snapshot_summary(t.trials, "final_test_acc", "final_val_acc")
    for fn in (final_by_snapshot, teacher_vs_student, ce_vs_kd):
        fig = fn(t)
        points = _stopped_points(fig)
        assert len(points) == len(left_out), fn.__name__
        # at the accuracy of the last epoch they ran
        assert sorted(points[:, 0 if fn is ce_vs_kd else 1]) == pytest.approx(sorted(100 * left_out["final_test_acc"]))
        text = _texts(fig)
        assert "config stopped by ASHA for some or all seeds (each at its last epoch: 3-4 epochs)" in text, fn.__name__
        assert f"hollow markers: {len(left_out)} students of configs ASHA stopped" in text, fn.__name__
    # the means drawn are those of the complete configs only
    fig = final_by_snapshot(t)
    means = np.concatenate([c.lines[0].get_ydata() for c in fig.axes[0].containers])
    kd = summ[summ["teacher_config"].notna()]
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


# ---------------------------------------------------------------------------------------------------------------
# honest statistics: seeds not trials, complete configs only, paired tests, variance floor, teacher seeds pooled
# ---------------------------------------------------------------------------------------------------------------

def _frame(rows):
    """A trials frame as analysis.load gives it (the columns the statistics read)."""
    df = pd.DataFrame(rows, columns=["trial_id", "status", "stopped_by_asha", "snapshot_epoch", "alpha", "seed",
                                     "final_val_acc", "final_test_acc"])
    return df.assign(snapshot_epoch=df["snapshot_epoch"].astype("Int64"), seed=df["seed"].astype("Int64"))


def test_best_configs_never_ranks_a_survivor_against_full_seed_means():
    # alpha 0.9: ASHA stopped seeds 1 and 2 at the rung; seed 0 survived with a lucky 0.70
    rows = [(f"a{s}", "TERMINATED", False, 1, 0.5, s, v, v) for s, v in enumerate([0.60, 0.62, 0.61])]
    rows += [("b0", "TERMINATED", False, 1, 0.9, 0, 0.70, 0.70),
             ("b1", "TERMINATED", True, 1, 0.9, 1, 0.30, 0.30), ("b2", "TERMINATED", True, 1, 0.9, 2, 0.31, 0.31)]
    df = _frame(rows)
    assert stats.config_complete(df).tolist() == [True] * 3 + [False] * 3
    best = stats.best_configs(df, "final_val_acc", top=5)
    assert best["alpha"].tolist() == [0.5] and best["n"].tolist() == [3]
    partial = stats.partial_configs(df)
    assert partial[["alpha", "seeds", "finished", "stopped_by_asha"]].values.tolist() == [[0.9, 3, 1, 2]]
    with pytest.raises(UsageError, match="no config with alpha == 0.9 has all its seeds finished"):
        stats.compare_groups(df, "alpha", 0.5, 0.9)
    assert stats.aggregate(df, "alpha", "final_val_acc")["alpha"].tolist() == [0.5]


def test_helpers_count_seeds_not_trials():
    # 2 snapshots x 2 alphas x 3 seeds, all finished; snapshot 2 is better by 0.02 at every seed
    rows = [(f"{e}{a}{s}", "TERMINATED", False, e, a, s, v, v)
            for e in (1, 2) for a in (0.5, 0.9) for s in (0, 1, 2)
            for v in [0.6 + 0.05 * s + 0.02 * (e == 2) + 0.01 * (a == 0.9)]]
    df = _frame(rows)
    c = stats.compare_groups(df, "snapshot_epoch", 1, 2, metric="final_val_acc")
    assert (c.a.n, c.b.n) == (3, 3)                              # seeds, not the 6 trials of each group
    assert c.paired and c.diff == pytest.approx(-0.02)
    assert "(3 vs 3 student seeds)" in c.text and "mean over its group's configs (2 vs 2" in c.text
    agg = stats.aggregate(df, "snapshot_epoch", "final_val_acc")
    assert agg["n"].tolist() == [3, 3] and agg["configs"].tolist() == [2, 2]
    assert stats.best_configs(df, top=10)["n"].tolist() == [3] * 4


def test_paired_test_when_the_seeds_match():
    seeds = pd.Index([0, 1, 2, 3], name="seed")
    a = pd.Series([0.80, 0.82, 0.79, 0.85], index=seeds)
    b = pd.Series([0.78, 0.81, 0.76, 0.84], index=seeds)
    c = stats.compare(a, b, "A", "B")
    ref = scipy_stats.ttest_rel(a, b)
    assert c.paired and "(paired t-test)" in c.text
    assert c.t == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue) and c.df == ref.df
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(ref.confidence_interval()))
    assert c.exceeds_noise
    # unpaired, the seeds' shared offsets hide the same difference
    welch = stats.compare(a.to_numpy(), b.to_numpy())
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert welch.test == "Welch t-test" and welch.p == pytest.approx(ref.pvalue) and not welch.exceeds_noise
    assert stats.compare(a, b.set_axis(pd.Index([4, 5, 6, 7], name="seed"))).test == "Welch t-test"


def test_zero_variance_is_never_significant():
    c = stats.compare([0.80, 0.80], [0.7667, 0.7667], "A", "B")
    assert c.verdict == "undetermined" and not c.exceeds_noise and "undetermined" in c.text
    # with the number of evaluation images known, the binomial variance is the floor
    c = stats.compare([0.80, 0.80], [0.7667, 0.7667], n_images=30)
    se = math.sqrt((0.8 * 0.2 / 30) / 2 + (0.7667 * 0.2333 / 30) / 2)
    assert c.floored and c.verdict == "within seed noise" and "binomial" in c.text
    assert c.ci_high - c.diff == pytest.approx(stats.t_critical(c.df) * se, rel=1e-6)
    seeds = pd.Index([0, 1], name="seed")
    c = stats.compare(pd.Series([0.80, 0.80], index=seeds), pd.Series([0.7667, 0.7667], index=seeds), n_images=30)
    assert c.paired and c.floored and c.verdict == "within seed noise"
    # a real difference on many images still shows
    assert stats.compare([0.80, 0.81, 0.80], [0.70, 0.71, 0.70], n_images=10000).exceeds_noise
    # the summary's CI is floored the same way
    s = stats.summary([0.8, 0.8], n_images=30)
    assert s.std == 0 and s.floored and s.half_width == pytest.approx(stats.t_critical(1) * math.sqrt(0.8 * 0.2 / 30 / 2))


def test_eval_image_count_is_read_off_the_accuracies():
    assert eval_image_count([9 / 40, 3 / 40, 5 / 40, 8 / 40]) == 40
    assert eval_image_count([float(np.float32(k / 1000)) for k in (101, 223, 187, 190)]) == 1000
    assert eval_image_count(np.random.default_rng(0).uniform(0, 1, 20)) is None   # not counts of anything
    assert eval_image_count([]) is None


def test_teacher_seeds_pool_into_one_group(tmp_path):
    exp = write_experiment(str(tmp_path), seeds=(0, 1), alphas=(0.9,), temps=(4.0,), kd=(0, 2), scheduler="fifo",
                           teacher_seeds=(0, 1))
    t = load(exp, teacher_stats=False)
    assert t.trials["teacher_hash"].nunique() == 4 and t.trials["teacher_config"].nunique() == 2
    assert stats.replicate_columns(t.trials) == ["teacher_seed", "seed"]
    summ = stats.snapshot_summary(t.trials)
    kd, ce = summ[summ["teacher_config"].notna()], summ[summ["teacher_config"].isna()]
    assert len(kd) == 2 * 3 and (kd["n"] == 4).all() and (kd["covers"] == "teacher and student seeds").all()
    assert ce["n"].tolist() == [2] and ce["covers"].tolist() == ["student seeds"]
    # every table and figure says which seeds its CI covers
    table = present.snapshot_table(t, t.trials)
    assert table["students of"].str.contains(r"\(teacher seeds 0, 1\) teacher").sum() == 6
    assert set(table["CI over"]) == {"teacher and student seeds", "student seeds"}
    assert set(present.top_configs(t, t.trials)["CI over"]) == {"teacher and student seeds", "student seeds"}
    for fn in (final_by_snapshot, teacher_vs_student, ce_vs_kd):
        assert "95% CI over teacher and student seeds (CE-only: student seeds)" in fn(t).axes[0].get_title()
    f = seed_noise_findings(t, t.trials)
    same_teacher = [c for c in f.comparisons if c.paired]
    assert same_teacher and all("teacher and student seeds" in c.text for c in same_teacher)
    assert any(c.test == "Welch t-test" and "4 teacher and student seeds vs 2 student seeds" in c.text
               for c in f.comparisons)


def test_what_matters_most_ranks_the_built_in_effects(tmp_path):
    # the writer's accuracy: +0.02 per snapshot epoch, +0.02 for ResNet-14, -0.03 x alpha, nothing for T
    exp = write_experiment(str(tmp_path), scheduler="fifo")
    t = load(exp, teacher_stats=False)
    r = importance(t.trials)
    assert r.skipped is None and r.n == len(t.trials)
    assert r.table["knob"].tolist()[:3] == ["snapshot epoch", "teacher depth", "alpha"]
    assert r.r2 > 0.5 and abs(r.table.set_index("knob").loc["temperature T", "share"]) < 0.02
    assert "seed" not in r.table["feature"].tolist()
    results = make_figures(t, str(tmp_path / "figs"), only=["importance"])
    assert results[0].skipped is None and _not_blank(results[0].png_path)
    build_report(exp, t)
    with open(os.path.join(exp, "report", "report.md")) as fh:
        md = fh.read()
    assert "## What matters most" in md and "Snapshot epoch matters most" in md


def test_results_side_by_side_when_one_sweep_has_no_complete_config(tmp_path, capsys):
    from tune_eskd.cli import main

    a = write_experiment(str(tmp_path / "one"), name="a", seeds=(0, 1), alphas=(0.9,), temps=(4.0,), kd=(2,),
                         stopped_snapshots=(1, 2, 4))      # ASHA stopped every KD student
    b = write_experiment(str(tmp_path / "two"), name="b", seeds=(0, 1), alphas=(0.9,), temps=(4.0,), kd=(0, 2),
                         scheduler="fifo")
    assert main(["results", a, b, "--no-teacher-stats"]) == 0
    out = capsys.readouterr().out
    assert "6 of 6 configs are left out of the rankings and comparisons" in out
    assert "| a: seeds |" in out and "| b: seeds |" in out and "| b | 1 |" in out and "| a | 1 |" not in out


# ---------------------------------------------------------------------------------------------------------------
# the figures read the sweep's record, and leave matplotlib's global state alone
# ---------------------------------------------------------------------------------------------------------------

def _grace_line(fig):
    ax = fig.axes[0]
    (line,) = [x for x in ax.lines if x.get_linestyle() == "--"]
    return line.get_xdata()[0], [x.get_text() for x in ax.get_legend().get_texts()][-1]


def test_asha_figure_draws_the_grace_period_the_sweep_recorded(tmp_path):
    from analysis.figures import asha_epochs

    exp = write_experiment(str(tmp_path), seeds=(0,), alphas=(0.9,), temps=(4.0,), kd=(0, 2))
    # an older record holds only the options (grace_period None): the pipeline's default, after the KD phase
    assert _grace_line(asha_epochs(load(exp, teacher_stats=False))) == (3, "grace period (3 epochs):\nfirst ASHA cut")
    with open(os.path.join(exp, "sweep.json")) as f:
        record = json.load(f)
    record["asha"] = {"grace_period": 1, "max_t": 4}     # what the sweep ran with, resolved
    with open(os.path.join(exp, "sweep.json"), "w") as f:
        json.dump(record, f)
    assert _grace_line(asha_epochs(load(exp, teacher_stats=False)))[0] == 1


def test_drawing_the_report_leaves_matplotlib_global_state_alone(tmp_path):
    import subprocess
    import sys

    exp = write_experiment(str(tmp_path), seeds=(0,), alphas=(0.9,), temps=(4.0,), kd=(0, 2), scheduler="fifo")
    code = f"""
import sys, matplotlib
# the raw values: reading rcParams["backend"] would resolve the backend, importing pyplot
raw = lambda: {{k: matplotlib.rcParams._get(k) for k in matplotlib.rcParams}}
before = raw()
from analysis.report import build_report
from analysis.tables import load
build_report({exp!r}, load({exp!r}, teacher_stats=False))
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported (it holds global figures and a backend)"
after = raw()
changed = sorted(k for k in before if before[k] != after[k])
assert not changed, changed
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=300)
    assert os.path.getsize(os.path.join(exp, "report", "figures", "final_by_snapshot.png")) > 1000


def test_report_shows_the_timeline(tmp_path):
    exp = write_experiment(str(tmp_path), seeds=(0,), alphas=(0.9,), temps=(4.0,), kd=(0, 2), scheduler="fifo")
    with open(build_report(exp, load(exp, teacher_stats=False))) as fh:
        html = fh.read()
    with open(os.path.join(exp, "report", "report.md")) as fh:
        md = fh.read()
    assert "## Where the time went\n\n### Timeline\n\n![Timeline](figures/timeline.png)" in md
    assert "figures/timeline.svg" not in md
    section = html[html.index("<h2>Where the time went</h2>"):html.index("<h2>Teachers</h2>")]
    assert "<img alt='Timeline' src='data:image/png;base64," in section and "critical-path lower bound" in section
    assert _not_blank(os.path.join(exp, "report", "figures", "timeline.png"))
