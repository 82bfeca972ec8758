"""cgan_kd: the golden vectors of tests/reference/ref_others.py section 8 (Softplus density-ratio loss, acceptance
probabilities, filter cutoff and mask), the density-ratio loss's minimiser, the conditional generator/discriminator
shapes, and the method's pipeline for classification and regression (teacher frozen, labels from the teacher, loss
terms, resume)."""
import math

import pytest
import torch
from torch import nn

from edgedistill.data.dataset import DataInfo, DataSplits, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Step
from edgedistill.methods.cgan_kd import CGANKD, acceptance_probs, dre_softplus_loss, filter_cutoff, keep_mask
from edgedistill.models.cgan import ConditionalGenerator, DensityRatioNet, ProjectionDiscriminator
from tests.helpers import tiny_net, toy_splits

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: two threads only add contention on a shared CPU (each setup here is ~1 s on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = dict(gan_steps=30, dre_steps=20, n_fake=60, burn_in=64, gan_width=8, noise_dim=8, progress=False,
             feature_tap="5", feature_epochs=20, warm_start_epochs=60)  # "5": tiny_net's Flatten, the embedding


# -- test vectors of tests/reference/ref_others.py section 8 ---------------------------------------------
def test_spec_vector_softplus_density_ratio_loss():
    r_real = torch.tensor([1.2, 0.8, 1.5, 0.9], dtype=torch.float64)
    r_fake = torch.tensor([0.3, 1.1, 0.6, 2.0], dtype=torch.float64)
    assert dre_softplus_loss(r_real, r_fake, lam=0.01).item() == pytest.approx(-1.311631, abs=1e-6)


def test_spec_vector_acceptance_probabilities_with_running_max():
    probs, m = acceptance_probs(torch.tensor([0.5, 2.0, 1.0, 4.0]), m_bar=3.0)
    assert m == 4.0
    assert torch.allclose(probs, torch.tensor([0.125, 0.5, 0.25, 1.0]))
    # probabilities in [0, 1]; below the burn-in max nothing reaches 1
    probs, m = acceptance_probs(torch.tensor([0.1, 2.9]), m_bar=3.0)
    assert m == 3.0 and torch.all((probs >= 0) & (probs < 1))


def test_spec_vector_filter_cutoff_and_strict_keep_mask():
    burn = torch.tensor([0.1, 0.5, 2.0, 0.05, 1.2, 3.0, 0.7, 0.2, 0.9, 4.0])
    cut = filter_cutoff(burn, 0.9)
    assert cut == pytest.approx(3.1, abs=1e-9)
    assert keep_mask(torch.tensor([0.3, 3.5, 2.9, 3.2]), cut).tolist() == [True, False, True, False]
    # rho = 1: the cutoff is the burn-in maximum, and a sample scoring exactly that maximum is dropped
    top = filter_cutoff(burn, 1.0)
    assert top == pytest.approx(4.0) and keep_mask(torch.tensor([3.99, 4.0, 4.5]), top).tolist() == [True, False, False]


def test_dre_loss_with_a_constant_ratio_is_minimised_at_the_true_ratio_one():
    """Real and generated samples from one distribution: the true ratio is 1, the gradient points to it."""
    def grad_at(c: float) -> float:
        r = torch.tensor(c, dtype=torch.float64, requires_grad=True)
        dre_softplus_loss(r.expand(8), r.expand(8), lam=0.01).backward()
        return r.grad.item()

    assert grad_at(0.5) < 0 < grad_at(2.0)
    assert abs(grad_at(1.0)) < 1e-12


def test_fitted_density_ratio_follows_the_true_ratio_on_a_toy_1d_problem():
    """real ~ N(0, 1), generated ~ N(1, 1): p_real / p_fake = exp(0.5 - x), decreasing in x."""
    torch.manual_seed(0)
    net = DensityRatioNet(1, n_classes=1, hidden=32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    y = torch.zeros(256, dtype=torch.long)
    for _ in range(200):
        real, fake = torch.randn(256, 1), torch.randn(256, 1) + 1.0
        loss = dre_softplus_loss(net(real, y), net(fake, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r = net(torch.tensor([[-1.0], [0.5], [2.0]]), y[:3])
    assert r[0] > r[1] > r[2]
    assert r[1].item() == pytest.approx(1.0, abs=0.35)  # true ratio at x = 0.5 is exactly 1


# -- models ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 50), (1, 8, 8), (2, 13, 9)])
@pytest.mark.parametrize("cond", ["class", "target"])
def test_generator_and_discriminator_shapes_and_gradients(shape, cond):
    kw = {"n_classes": 4} if cond == "class" else {"n_targets": 2}
    y = torch.tensor([0, 3, 1]) if cond == "class" else torch.randn(3, 2)
    gen, disc = ConditionalGenerator(shape, noise_dim=8, width=8, **kw), ProjectionDiscriminator(shape, width=8, **kw)
    x = gen(torch.randn(3, 8), y)
    assert x.shape == (3, *shape)
    score = disc(x, y)
    assert score.shape == (3,)
    score.sum().backward()
    assert all(p.grad is not None for p in gen.parameters())
    assert disc.cond.map.weight.grad is not None and gen.cond.map.weight.grad is not None


def test_the_condition_changes_the_generated_sample():
    gen = ConditionalGenerator((1, 20), n_classes=3, noise_dim=4, width=8).eval()
    z = torch.randn(1, 4)
    assert not torch.allclose(gen(z, torch.tensor([0])), gen(z, torch.tensor([2])))


def test_models_refuse_two_conditions_and_bad_shapes():
    with pytest.raises(UserInputError, match="exactly one"):
        ConditionalGenerator((1, 20), n_classes=3, n_targets=1)
    with pytest.raises(UserInputError, match="channels"):
        ProjectionDiscriminator((20,), n_classes=3)


# -- the method --------------------------------------------------------------------------------------------
def _trained_teacher(splits: DataSplits, channels: int = 3, out: int = 3, regression: bool = False) -> nn.Module:
    torch.manual_seed(0)
    t = tiny_net(channels, out, width=16)
    opt = torch.optim.Adam(t.parameters(), lr=1e-2)
    x, y = splits.train.x, splits.train.y
    for _ in range(60):
        o = t(x)
        loss = nn.functional.mse_loss(o.squeeze(1), y) if regression else nn.functional.cross_entropy(o, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t.zero_grad(set_to_none=True)
    return t


def _regression_splits(n: int = 96) -> DataSplits:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 16, generator=g)
    y = x[:, 0].mean(1) * 3.0
    data = TensorData({"x": x}, y)
    info = DataInfo(name="toyreg", task="regression", input_shape=(2, 16), n_outputs=1, views={"x": (2, 16)},
                    sizes={"train": 64, "val": 16, "test": 16})
    return DataSplits(data.subset(range(64)), data.subset(range(64, 80)), data.subset(range(80, n)), info)


@pytest.fixture(scope="module")
def classification_setup():
    splits = toy_splits()
    teacher = _trained_teacher(splits)
    torch.manual_seed(7)  # what build_network does: the run seed, read by the method as its private seed
    m = CGANKD(tiny_net(), splits.info, teacher, **SMALL)
    m.setup(splits.train, torch.device("cpu"))
    return splits, teacher, m


def test_pool_is_balanced_relabelled_by_the_teacher_and_teacher_stays_frozen(classification_setup):
    splits, teacher, m = classification_setup
    assert m.fake_x.shape == (60, 3, 16) and m.fake_y.dtype == torch.long
    assert torch.equal(m.fake_y, teacher(m.fake_x).argmax(1))  # label adjustment: the teacher's argmax
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    stats = m.describe()
    assert stats["pipeline_n_fake"] == 60 and 0 < stats["pipeline_acceptance_rate"] <= 1


def test_training_step_terms_are_the_union_mean_and_only_the_student_learns(classification_setup):
    splits, teacher, m = classification_setup
    batch = splits.train.batch(torch.arange(16))
    torch.manual_seed(3)
    terms = m.training_step(batch, Step(0, 0, 1, 1))
    assert set(terms) == {"ce_real", "ce_fake"}
    torch.manual_seed(3)  # the same synthetic draw, by hand: fake_fraction 0.5 -> 16 synthetic samples
    idx = torch.randint(len(m.fake_x), (16,))
    student = m.networks["student"]
    out = student(torch.cat([batch["x"], m.fake_x[idx]]))
    union = nn.functional.cross_entropy(out, torch.cat([batch["y"], m.fake_y[idx]]))
    assert sum(terms.values()).item() == pytest.approx(union.item(), rel=1e-5)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def _accuracy(net: nn.Module, splits) -> float:
    with torch.no_grad():
        return (net.eval()(splits.train.x).argmax(1) == splits.train.y).float().mean().item()


def test_density_ratio_features_come_from_a_separately_trained_network(classification_setup):
    from edgedistill.models import extract

    splits, teacher, m = classification_setup
    feat = m.feature_model
    assert feat is not teacher and not any(p.requires_grad for p in feat.parameters())
    assert [p.shape for p in feat.parameters()] == [p.shape for p in teacher.parameters()]  # the teacher's architecture
    assert any(not torch.equal(a, b) for a, b in zip(feat.parameters(), teacher.parameters()))
    assert _accuracy(feat, splits) > 0.8  # trained on the labels (3 classes: chance is 1/3)
    x = splits.train.x[:8]
    out, phi = m._teacher_pass(x)
    with torch.no_grad():
        assert torch.equal(out, teacher(x))  # the teacher still filters and relabels
        assert torch.allclose(phi, extract(feat, x, {"phi": "5"})[1]["phi"].flatten(1))
        assert not torch.allclose(phi, extract(teacher, x, {"phi": "5"})[1]["phi"].flatten(1))
    assert m.describe()["feature_net"] == "separate"


def test_teacher_features_and_no_warm_start_are_the_former_form():
    splits = toy_splits()
    teacher = _trained_teacher(splits)
    torch.manual_seed(7)
    m = CGANKD(tiny_net(), splits.info, teacher, **{**SMALL, "feature_net": "teacher", "warm_start": False})
    before = {k: v.clone() for k, v in m.networks["student"].state_dict().items()}
    m.setup(splits.train, torch.device("cpu"))
    assert m.feature_model is teacher
    m.networks["student"].eval()  # BatchNorm statistics aside: the first step trains on the union batch only
    with torch.no_grad():
        m.training_step(splits.train.batch(torch.arange(16)), Step(0, 0, 1, 1))
    after = m.networks["student"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no warm start
    assert "warm_start_seconds" not in m.stats


def test_the_student_is_warm_started_on_the_labels_at_the_first_step_only():
    splits = toy_splits()
    torch.manual_seed(7)
    m = CGANKD(tiny_net(), splits.info, _trained_teacher(splits), **SMALL)
    init = {k: v.clone() for k, v in m.networks["student"].state_dict().items()}
    m.setup(splits.train, torch.device("cpu"))
    student = m.networks["student"]
    # setup leaves the student alone: a resumed run has its weights restored before setup and must keep them
    assert all(torch.equal(init[k], v) for k, v in student.state_dict().items())
    acc0 = _accuracy(student, splits)
    batch = splits.train.batch(torch.arange(16))
    m.training_step(batch, Step(1, 4, 2, 4))  # a later step (a run resumed after epoch 1): no warm start
    assert all(torch.equal(init[k], v) for k, v in student.state_dict().items() if "running" not in k)
    student.load_state_dict(init)
    m.training_step(batch, Step(0, 0, 2, 4))
    assert student.training and m.stats["warm_start_seconds"] >= 0
    assert _accuracy(student, splits) > max(0.8, acc0 + 0.2)
    warmed = {k: v.clone() for k, v in student.named_parameters()}
    student.load_state_dict(init)
    m.training_step(batch, Step(0, 0, 2, 4))  # a run resumed from its start: the same warm start again
    assert all(torch.equal(warmed[k], v) for k, v in student.named_parameters())


def test_the_warm_start_uses_the_recipes_train_settings(monkeypatch):
    import edgedistill.methods.cgan_kd as module
    from edgedistill.config import TrainConfig

    seen = []
    real = module.fit_on_labels
    monkeypatch.setattr(module, "fit_on_labels", lambda model, x, y, cfg, cls, g: seen.append(cfg) or real(model, x, y, cfg, cls, g))
    splits = toy_splits()
    torch.manual_seed(7)
    m = CGANKD(tiny_net(), splits.info, _trained_teacher(splits), **{**SMALL, "warm_start_epochs": None})
    m.optimizers(TrainConfig(epochs=3, batch_size=8, lr=1e-3))
    m.setup(splits.train, torch.device("cpu"))
    m.training_step(splits.train.batch(torch.arange(8)), Step(0, 0, 3, 7))
    feature_cfg, warm_cfg = seen
    assert (feature_cfg.epochs, feature_cfg.schedule) == (20, "constant")
    assert (warm_cfg.epochs, warm_cfg.batch_size, warm_cfg.lr, warm_cfg.schedule) == (3, 8, 1e-3, "constant")


def test_setup_is_reproducible_and_leaves_the_global_rng_alone():
    """A resumed run retrains the pipeline in setup: from the same run seed it rebuilds the same pool."""
    splits = toy_splits()
    teacher = _trained_teacher(splits)
    pools = []
    for _ in range(2):
        torch.manual_seed(11)
        m = CGANKD(tiny_net(), splits.info, teacher, **SMALL)
        before = torch.get_rng_state()
        m.setup(splits.train, torch.device("cpu"))
        assert torch.equal(torch.get_rng_state(), before)
        pools.append((m.fake_x, m.fake_y))
    assert torch.equal(pools[0][0], pools[1][0]) and torch.equal(pools[0][1], pools[1][1])


def test_regression_pool_takes_the_teachers_predicted_target_and_mse_terms():
    splits = _regression_splits()
    teacher = _trained_teacher(splits, channels=2, out=1, regression=True)
    torch.manual_seed(5)
    m = CGANKD(tiny_net(2, 1), splits.info, teacher, **{**SMALL, "rho": 0.7})
    m.setup(splits.train, torch.device("cpu"))
    assert m.fake_x.shape == (60, 2, 16) and m.fake_y.shape == (60,)  # same target shape as the data's y
    assert torch.allclose(m.fake_y, teacher(m.fake_x).squeeze(1))
    terms = m.training_step(splits.train.batch(torch.arange(16)), Step(0, 0, 1, 1))
    assert set(terms) == {"mse_real", "mse_fake"} and all(math.isfinite(v.item()) for v in terms.values())


def test_without_the_density_ratio_every_sample_is_accepted_and_only_the_filter_drops():
    splits = toy_splits()
    teacher = _trained_teacher(splits)
    torch.manual_seed(7)
    m = CGANKD(tiny_net(), splits.info, teacher, **{**SMALL, "density_ratio": False})
    m.setup(splits.train, torch.device("cpu"))
    assert m.stats["acceptance_rate"] == 1.0 and "dre_loss" not in m.stats
    assert len(m.fake_x) == 60 and torch.equal(m.fake_y, teacher(m.fake_x).argmax(1))


def test_fake_fraction_zero_is_the_student_on_real_data_alone(classification_setup):
    splits, teacher, m0 = classification_setup
    m = CGANKD(tiny_net(), splits.info, teacher, **{**SMALL, "fake_fraction": 0.0})
    m.fake_x, m.fake_y = m0.fake_x, m0.fake_y
    batch = splits.train.batch(torch.arange(16))
    terms = m.training_step(batch, Step(0, 0, 1, 1))
    assert set(terms) == {"ce_real"}
    expected = nn.functional.cross_entropy(m.networks["student"](batch["x"]), batch["y"])
    assert terms["ce_real"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"rho": 0.0}, "rho"),
    ({"fake_fraction": 1.0}, "fake_fraction"),
    ({"gan_steps": 0}, "gan_steps"),
    ({"n_fake": 2.5}, r"method.params.n_fake: Input should be a valid integer"),
    ({"gan_lr": True}, r"method.params.gan_lr: Input should be a valid number"),
    ({"label_jitter": -0.1}, r"method.params.label_jitter: Input should be greater than or equal to 0"),
    ({"feature_tap": "nope"}, "feature_tap"),
    ({"density_ratio": "yes"}, "density_ratio"),
])
def test_bad_params_are_refused_naming_the_key(kwargs, match):
    splits = toy_splits()
    with pytest.raises(UserInputError, match=match):
        CGANKD(tiny_net(), splits.info, tiny_net(), **{**SMALL, **kwargs})


def test_no_teacher_is_refused():
    splits = toy_splits()
    with pytest.raises(UserInputError, match=r"teachers: method 'cgan_kd' needs 1 teacher in a 'teacher' section"):
        CGANKD(tiny_net(), splits.info, None, **SMALL)


def test_pipeline_runs_on_small_images():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 2, (40,), generator=g)
    x = torch.randn(40, 1, 8, 8, generator=g) + y.float()[:, None, None, None]
    info = DataInfo(name="toyimg", task="classification", input_shape=(1, 8, 8), n_outputs=2, classes=["a", "b"],
                    views={"x": (1, 8, 8)}, sizes={"train": 40, "val": 0, "test": 0})

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 2))

    torch.manual_seed(0)
    m = CGANKD(net(), info, net(), **{**SMALL, "feature_tap": "3", "n_fake": 20})
    m.setup(TensorData({"x": x}, y), torch.device("cpu"))
    assert m.fake_x.shape == (20, 1, 8, 8)
    terms = m.training_step(TensorData({"x": x}, y).batch(torch.arange(8)), Step(0, 0, 1, 1))
    assert set(terms) == {"ce_real", "ce_fake"}


def test_smoke_mode_caps_the_pipeline_and_only_smoke_mode_does():
    from pathlib import Path

    import yaml

    from edgedistill.config import load_recipe
    from edgedistill.experiment.smoke import smoke_recipe

    path = Path(__file__).resolve().parent.parent / "recipes" / "cgan_kd.yaml"
    d = yaml.safe_load(path.read_text())
    d["method"]["params"]["dre_steps"] = 7  # below its cap: kept
    smoke = smoke_recipe(load_recipe(d)).method.params
    assert smoke["gan_steps"] == 100 and smoke["n_fake"] == 64 and smoke["dre_steps"] == 7 and smoke["dre_pool"] == 4
    d["name"] = "mine-smoke"  # a name is not a mode: a real run keeps its sizes whatever it is called
    d["method"]["params"]["feature_tap"] = "5"
    splits = toy_splits()
    m = CGANKD.from_recipe(load_recipe(d), student=tiny_net(), teacher=tiny_net(), info=splits.info)
    assert m.params.gan_steps == 1500 and m.params.n_fake == 1000
    # the capped values reach the typed params of the method a smoke run builds
    d["name"] = "cgan-kd-gunpoint"
    capped = CGANKD.from_recipe(smoke_recipe(load_recipe(d)), student=tiny_net(), teacher=tiny_net(), info=splits.info)
    assert (capped.params.gan_steps, capped.params.n_fake, capped.params.dre_steps, capped.params.burn_in) == (100, 64, 7, 64)


def test_the_pipeline_display_follows_engine_progress_and_no_from_recipe_override():
    from pathlib import Path

    import yaml

    from edgedistill.config import load_recipe
    from edgedistill.methods.base import Method

    assert "from_recipe" not in vars(CGANKD) and CGANKD.from_recipe.__func__ is Method.from_recipe.__func__
    path = Path(__file__).resolve().parent.parent / "recipes" / "cgan_kd.yaml"
    d = yaml.safe_load(path.read_text())
    d["method"]["params"]["feature_tap"] = "5"
    splits = toy_splits()
    for shown in (True, False):
        d["engine"] = {"progress": shown}
        m = CGANKD.from_recipe(load_recipe(d), student=tiny_net(), teacher=tiny_net(), info=splits.info)
        assert m.params.progress is shown
