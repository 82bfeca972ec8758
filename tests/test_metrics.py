import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, r2_score

from edgedistill.metrics import classification_metrics, ece, macro_f1, regression_metrics, selection_score


def test_classification_metrics_against_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=g)
    y = torch.randint(0, 5, (200,), generator=g)
    m = classification_metrics(logits, y)
    pred = logits.argmax(1)
    assert m["acc"] == pytest.approx(float((pred == y).float().mean()))
    assert m["f1"] == pytest.approx(f1_score(y.numpy(), pred.numpy(), average="macro"))
    assert m["nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)


def test_macro_f1_ignores_absent_classes_like_sklearn():
    y, p = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    assert macro_f1(p, y, 4) == pytest.approx(f1_score(y.numpy(), p.numpy(), average="macro"))


@pytest.mark.parametrize("seed", range(20))
def test_macro_f1_equals_sklearn_on_random_labels(seed: int):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 9)), int(rng.integers(1, 60))
    y, p = rng.integers(0, k, n), rng.integers(0, k, n)
    assert macro_f1(torch.tensor(p), torch.tensor(y), k) == pytest.approx(
        f1_score(y, p, labels=np.union1d(y, p), average="macro", zero_division=0), rel=0, abs=1e-12)


def test_macro_f1_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got 0..3"):
        macro_f1(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    assert macro_f1(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 3) == 0.0


def _hand_macro_f1(pred: list[int], y: list[int]) -> float:
    """Per-class F1 = 2TP / (2TP + FP + FN), averaged over the classes that occur in y or in pred."""
    classes = sorted(set(y) | set(pred))
    f1 = []
    for c in classes:
        tp = sum(1 for a, b in zip(y, pred) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, pred) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, pred) if a == c and b != c)
        f1.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1) / len(f1)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_equals_a_hand_computation_with_absent_classes(seed: int):
    # 7 classes: 5 never occurs in y (only predicted), 2 is never predicted (only in y), 6 occurs in neither
    # and must not enter the mean.
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 2, 3, 4], size=120)
    pred = np.where(rng.random(120) < 0.5, y, rng.choice([0, 1, 3, 4, 5], size=120))
    pred[pred == 2] = 5
    assert 5 not in y and 5 in pred and 2 in y and 2 not in pred and 6 not in y and 6 not in pred
    got = macro_f1(torch.tensor(pred), torch.tensor(y), 7)
    assert got == pytest.approx(_hand_macro_f1(pred.tolist(), y.tolist()), rel=0, abs=1e-12)
    assert 0 < got < 1


def test_ece_perfectly_calibrated_and_overconfident():
    # confident and always right: ECE ~ 1 - confidence
    logits = torch.tensor([[10.0, 0.0]] * 10)
    y = torch.zeros(10, dtype=torch.long)
    conf = float(logits.double().softmax(1).max(1).values[0])
    assert ece(logits, y) == pytest.approx(1 - conf, abs=1e-9)
    # confident and half wrong: ECE ~ conf - 0.5
    y2 = torch.tensor([0, 1] * 5)
    assert ece(logits, y2) == pytest.approx(conf - 0.5, abs=1e-9)


def test_regression_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    p = y + rng.normal(scale=0.3, size=50)
    m = regression_metrics(torch.tensor(p), torch.tensor(y))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(float(np.sqrt(((y - p) ** 2).mean())))
    assert m["r2"] == pytest.approx(r2_score(y, p))


def test_selection_prefers_accuracy_then_nll():
    a = {"acc": 0.9, "nll": 0.5}
    b = {"acc": 0.9, "nll": 0.3}
    assert selection_score(b) > selection_score(a)
    assert selection_score({"rmse": 1.0, "mae": 1.0}) > selection_score({"rmse": 2.0, "mae": 0.1})


def test_ece_golden_value_from_the_reference():
    # tests/reference/ref_asu.py section 7: probabilities given directly, so logits = log P.
    p = torch.tensor([[0.91, 0.09], [0.62, 0.38], [0.57, 0.43], [0.18, 0.82], [0.29, 0.71], [0.97, 0.03]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 0])
    assert ece(p.log(), y) == pytest.approx(0.3433333333333334, abs=1e-9)


def test_temperature_scaling_recovers_the_scale_and_keeps_accuracy():
    from edgedistill.metrics import accuracy, fit_temperature

    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 10, generator=g) * 3
    y = torch.distributions.Categorical(logits=z).sample()  # labels drawn from the logits: calibrated at T = 1
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.08)
    for scale in (0.05, 4.0):  # shrunk (underconfident) or stretched (overconfident) logits
        t = fit_temperature(z * scale, y)
        assert t == pytest.approx(scale, rel=0.08)
        assert ece(z * scale / t, y) < 0.5 * ece(z * scale, y)
        assert accuracy(z * scale / t, y) == accuracy(z * scale, y)


def test_temperature_minimises_the_nll():
    from edgedistill.metrics import fit_temperature, nll

    g = torch.Generator().manual_seed(1)
    z = torch.randn(500, 4, generator=g)
    y = torch.distributions.Categorical(logits=2 * z).sample()  # informative labels: the optimum is inside the range
    t = fit_temperature(z, y)
    assert 0.3 < t < 0.8
    assert all(nll(z / t, y) <= nll(z / (t * f), y) + 1e-9 for f in (0.9, 1.1, 0.5, 2.0))
