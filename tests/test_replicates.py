"""Independent replicates: every random stream depends on the role (teacher or student) as well as the seed."""
import pytest
import torch

from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Trainer

CPU = torch.device("cpu")
SAME = dict(model="resnet8", width=0.25, epochs=1, batch_size=64, seed=0, dataset="synthetic", subset=300)


@pytest.fixture(scope="module")
def data():
    return load_splits("synthetic", subset=300, val_split=0.1)


def _first_epoch(trainer: Trainer):
    """The epoch's (sample indices in order, sample index -> augmented view) and its metrics."""
    order, views = [], {}
    batches = trainer.train.views

    def spy(*args, **kwargs):  # wraps whatever signature the engine has, to see exactly what it trains on
        for idx, inputs in batches(*args, **kwargs):
            order.extend(idx.tolist())
            views.update(zip(idx.tolist(), inputs.clone()))
            yield idx, inputs

    trainer.train.views = spy
    return order, views, trainer.run_epoch()


def test_seed0_student_is_no_twin_of_its_seed0_teacher(data):
    """Same arch, data, seed and hyper-parameters: only the role differs. A CE-only student must still start
    from other weights, visit the samples in another order, see other crops and flips, and so train
    differently (before the fix, it was the teacher's own run: the same init, order, views and loss)."""
    teacher = Trainer(TeacherConfig(**SAME, snapshots=[1]), data, CPU)
    student = Trainer(StudentConfig(**SAME, kd_epochs=0), data, CPU)
    t_init, s_init = teacher.model.state_dict(), student.model.state_dict()
    assert not torch.equal(t_init["stem.0.weight"], s_init["stem.0.weight"])  # the first conv's random init
    assert not torch.equal(t_init["fc.weight"], s_init["fc.weight"])
    t_order, t_views, t_metrics = _first_epoch(teacher)
    s_order, s_views, s_metrics = _first_epoch(student)
    assert sorted(t_order) == sorted(s_order) == list(range(len(data.train_y)))
    assert t_order != s_order
    differing = sum(not torch.equal(t_views[i], s_views[i]) for i in t_views)
    assert differing > len(t_views) // 2  # 1 in 162 crop-and-flip draws coincide by chance
    assert t_metrics["train_loss"] != s_metrics["train_loss"]


def test_each_role_is_reproducible_from_its_seed(data):
    """The role changes the streams, not their determinism: the same (seed, role) gives the same run."""
    a = _first_epoch(Trainer(StudentConfig(**SAME, kd_epochs=0), data, CPU))
    b = _first_epoch(Trainer(StudentConfig(**SAME, kd_epochs=0), data, CPU))
    assert a[0] == b[0] and all(torch.equal(a[1][i], b[1][i]) for i in a[1])
    assert a[2]["train_loss"] == b[2]["train_loss"]


def test_teacher_hash_changes_with_the_stream_derivation(monkeypatch):
    """Snapshots trained under the old seed-only streams are not taken for the weights the new ones train."""
    from tune_eskd import seeds

    cfg = TeacherConfig(**SAME, snapshots=[1])
    before = cfg.teacher_hash()
    monkeypatch.setattr(seeds, "VERSION", seeds.VERSION + 1)
    assert cfg.teacher_hash() != before
