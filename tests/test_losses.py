"""kd_loss: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), batch-averaged."""
import math

import pytest
import torch
import torch.nn.functional as F

from tune_eskd.losses import kd_loss

STUDENT = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
TEACHER = [[0.2, 1.5, 3.0], [2.0, -0.5, 1.0]]
TARGETS = [1, 2]


def _softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _hand_kd(student, teacher, targets, alpha, t):
    """The loss written out with explicit softmax / log formulas, in plain floats."""
    kls, ces = [], []
    for s, te, y in zip(student, teacher, targets):
        p_s, p_t = _softmax(s, t), _softmax(te, t)
        kls.append(sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s)))
        ces.append(-math.log(_softmax(s)[y]))
    kl, ce = sum(kls) / len(kls), sum(ces) / len(ces)
    return alpha * t * t * kl + (1 - alpha) * ce


def _kd(student, teacher, targets, **kw):
    return kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), **kw)


@pytest.mark.parametrize("alpha,t", [(0.7, 2.0), (0.9, 4.0), (1.0, 1.0), (0.5, 0.5), (0.3, 8.0)])
def test_matches_hand_computed_value(alpha, t):
    expected = _hand_kd(STUDENT, TEACHER, TARGETS, alpha, t)
    got = _kd(STUDENT, TEACHER, TARGETS, alpha=alpha, temperature=t).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_single_example_literal_value():
    # One sample, T=2, alpha=0.5, worked out by hand:
    # p_s = softmax([0, ln 3] / 2) = softmax([0, ln sqrt3]) = [1/(1+sqrt3), sqrt3/(1+sqrt3)]
    # p_t = softmax([ln 3, 0] / 2) = [sqrt3/(1+sqrt3), 1/(1+sqrt3)]
    # KL(p_t || p_s) = sqrt3/(1+sqrt3) ln sqrt3 + 1/(1+sqrt3) ln(1/sqrt3) = (sqrt3 - 1)/(1 + sqrt3) * ln(3)/2
    # CE(s, y=1) = -ln(3/4) = ln(4/3)
    r3 = math.sqrt(3)
    kl = (r3 - 1) / (1 + r3) * math.log(3) / 2
    expected = 0.5 * 4 * kl + 0.5 * math.log(4 / 3)
    got = _kd([[0.0, math.log(3)]], [[math.log(3), 0.0]], [1], alpha=0.5, temperature=2.0).item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert got == pytest.approx(0.43821, abs=1e-4)


def test_alpha_zero_is_cross_entropy():
    s, te, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    for t in (1.0, 4.0):
        assert torch.equal(kd_loss(s, te, y, alpha=0.0, temperature=t), F.cross_entropy(s, y))


def test_alpha_one_ignores_labels_and_is_zero_at_the_teacher():
    s, te = torch.randn(8, 10), torch.randn(8, 10)
    y1, y2 = torch.zeros(8, dtype=torch.long), torch.full((8,), 9)
    assert kd_loss(s, te, y1, alpha=1.0, temperature=4.0).item() == pytest.approx(
        kd_loss(s, te, y2, alpha=1.0, temperature=4.0).item(), abs=1e-7)
    assert kd_loss(te, te, y1, alpha=1.0, temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, te, y1, alpha=1.0, temperature=4.0).item() > 0


def test_batch_mean_not_element_mean():
    """Duplicating the batch leaves the loss unchanged (averaged over samples, summed over classes)."""
    one = _kd(STUDENT, TEACHER, TARGETS, alpha=0.8, temperature=3.0)
    two = _kd(STUDENT * 2, TEACHER * 2, TARGETS * 2, alpha=0.8, temperature=3.0)
    assert one.item() == pytest.approx(two.item(), rel=1e-6)


def _kd_grad_norm(s, te, t, *, t_squared=True):
    s = s.clone().requires_grad_(True)
    y = torch.zeros(len(s), dtype=torch.long)
    if t_squared:
        loss = kd_loss(s, te, y, alpha=1.0, temperature=t)
    else:  # the same KL without the T^2 factor
        loss = F.kl_div(F.log_softmax(s / t, 1), F.log_softmax(te / t, 1), reduction="batchmean", log_target=True)
    loss.backward()
    return s.grad.norm().item()


def test_t_squared_keeps_gradient_scale_across_temperatures():
    g = torch.Generator().manual_seed(0)
    s, te = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    temps = (2.0, 4.0, 8.0)
    with_t2 = [_kd_grad_norm(s, te, t) for t in temps]
    without = [_kd_grad_norm(s, te, t, t_squared=False) for t in temps]
    # With T^2: the KD gradient w.r.t. the student logits stays within a small factor across T.
    assert max(with_t2) / min(with_t2) < 1.5
    # Without it the gradient shrinks roughly like 1/T^2: 4x per doubling of T, 16x from T=2 to T=8.
    assert 3.0 < without[0] / without[1] < 5.0
    assert 3.0 < without[1] / without[2] < 5.0
    assert without[0] / without[2] > 12.0
    for t, a, b in zip(temps, with_t2, without):
        assert a == pytest.approx(t * t * b, rel=1e-4)

