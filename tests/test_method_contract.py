"""The method contract (methods/base.py), checked for every registered regime (aeon's ``test_all_estimators``).

Each regime is built the way a run builds it: its shipped recipe in smoke mode (tiny synthetic data of the
recipe's kind), the plan and the teachers from the runner (``plan``, ``Runner.teachers``: trained for one smoke
epoch) and the method from ``distilled_method``. Then, for each regime:

* one ``training_step`` gives a dict of finite 0-dim tensors named by strings;
* the summed terms' gradient reaches every network it trains (regimes that step their own optimizers inside
  ``training_step``: every such network's weights move instead), and no teacher parameter gets one or changes;
* every teacher is in eval mode after ``setup`` and after a step, and no teacher is one of ``networks``;
* ``describe()`` is JSON;
* two epochs straight, and the same run stopped after epoch 1 (its stage directory as a kill right after that
  epoch's checkpoint leaves it) then resumed by the engine from ``last.pt`` in a fresh regime, give
  bit-identical deliverable weights (last and best), weights of every trained network, test metrics and logged
  loss terms.

A new regime is covered by registering it and shipping a recipe for it. A regime that cannot meet a check for a
genuine reason is marked there with ``pytest.xfail(reason)``, never skipped.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from edgedistill.augment.pipeline import step_generator
from edgedistill.config import load_recipe, recipe_to_dict
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine.loop import Stage, Trainer, deliverable_weights
from edgedistill.experiment.build import seed_everything
from edgedistill.experiment.runner import Runner, distilled_method, plan
from edgedistill.experiment.smoke import smoke_recipe
from edgedistill.methods.base import Method, Step, TeacherNet
from edgedistill.methods.teachers import Teachers
from edgedistill.progress import StageProgress
from edgedistill.registry import METHODS

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# The package's methods (test modules register their own helpers in the same registry).
PACKAGE_METHODS = [n for n in METHODS.names() if METHODS.entry(n).obj.__module__.startswith("edgedistill.")]


@lru_cache(maxsize=None)
def _recipes_by_method() -> dict[str, list[Path]]:
    """Shipped recipes (not sweeps) by method name, in file name order."""
    by: dict[str, list[Path]] = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        d = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        if "sweep" not in d:
            by.setdefault((d.get("method") or {}).get("name"), []).append(path)
    return by


def shipped_recipe(name: str) -> Path:
    """The recipe named after the method, else the first shipped one (alphabetically) that uses it."""
    uses = _recipes_by_method().get(name, [])
    if not uses:
        pytest.fail(f"method '{name}' is registered but no recipe in recipes/ uses it: ship one (the contract "
                    "test builds every regime from its recipe)")
    return next((p for p in uses if p.stem == name), uses[0])


def test_every_registered_method_has_a_shipped_recipe():
    missing = [name for name in PACKAGE_METHODS if not _recipes_by_method().get(name)]
    assert not missing, f"registered methods with no recipe in recipes/ (the contract test builds each from one): {missing}"


class Built:
    """A method's plan and trained teachers for run seed ``seed``; ``method()`` builds a fresh regime on them."""

    def __init__(self, name: str, root: Path) -> None:
        smoke = smoke_recipe(load_recipe(shipped_recipe(name)))
        d = recipe_to_dict(smoke)
        d["train"]["epochs"] = 2  # the resume check interrupts after epoch 1 of 2
        d["engine"]["progress"] = False
        for key in METHODS.get(name).smoke_caps:
            # A pipeline of its own in setup (a GAN), which every check runs: a tenth of its smoke size.
            d["method"]["params"][key] = max(1, d["method"]["params"][key] // 10)
        self.recipe = load_recipe(d)
        self.plan = plan(self.recipe, smoke=True)
        self.seed = self.recipe.seeds[0]
        self.runner = Runner(self.plan, root / "run", StageProgress(enabled=False))
        self.teachers = [t for t, _ in self.runner.teachers(self.seed)]

    def method(self) -> Method:
        return distilled_method(self.plan, self.seed, self.teachers)


_ROOTS: dict[str, Path] = {}


@lru_cache(maxsize=None)
def built(name: str) -> Built:
    return Built(name, _ROOTS[name])


@pytest.fixture
def regime(request, tmp_path_factory):
    """The Built for the test's method (plan and teachers made once per method), torch settings restored after."""
    name = request.node.callspec.params["name"]
    if name not in _ROOTS:
        _ROOTS[name] = tmp_path_factory.mktemp(f"contract-{name}")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # smoke-size tensors: a second thread only waits (and the file stays on one core)
    try:
        yield built(name)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def teacher_modules(b: Built, method: Method) -> list[nn.Module]:
    """The teachers the method got from the recipe, ``method.teacher`` and any TeacherNet it keeps."""
    found = [t.model for t in b.teachers]
    if isinstance(method.teacher, nn.Module):
        found.append(method.teacher)
    for value in vars(method).values():
        if isinstance(value, TeacherNet):
            found.append(value.model)
        elif isinstance(value, Teachers):
            found += value.models
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, TeacherNet) for v in value):
            found += [v.model for v in value]
    unique: dict[int, nn.Module] = {}
    for m in found:
        unique.setdefault(id(m), m)
    return list(unique.values())


def last_epoch_step(b: Built, method: Method) -> tuple[dict, Step]:
    """What the engine does up to a ``training_step`` (on CPU, without the Fabric wrappers): ``setup``, every
    trained network in training mode, then the first batch of the last epoch, augmented as in training. The
    last epoch's step, not the first: terms scheduled to start later (a warm-up, CA-MKD's intermediate term)
    are on, so every network the regime trains takes part."""
    cfg, train = b.recipe.train, b.plan.splits.train
    method.optimizers(cfg)  # regimes that step their own optimizers keep them here
    method.setup(train, torch.device("cpu"), val=b.plan.splits.val)
    for net in method.networks.values():
        net.train()
    seed_everything(b.seed)
    epoch, steps_per_epoch = cfg.epochs - 1, train.num_batches(cfg.batch_size, drop_last=True)
    gen = torch.Generator().manual_seed(b.seed * 1_000_003 + epoch)
    batch = next(iter(train.batches(cfg.batch_size, shuffle=True, generator=gen, drop_last=True)))
    step = Step(epoch, epoch * steps_per_epoch, cfg.epochs, steps_per_epoch)
    if b.plan.augmenter is not None:
        batch = b.plan.augmenter(batch, step_generator(b.seed, step.step))
    return batch, step


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def in_eval_mode(model: nn.Module) -> bool:
    return not any(m.training for m in model.modules())


@dataclass
class Probe:
    """What one training step of a freshly built regime showed (one setup per regime: some set up for seconds)."""

    method: Method
    teachers: list[nn.Module]
    terms: dict
    teachers_eval_after_setup: bool
    teachers_eval_after_step: bool
    trained: list[str]  # networks with parameters that require grad
    reached: dict[str, bool]  # network -> some finite gradient reached it (manual optimisation: its weights moved)
    finite_grads: dict[str, bool]
    teacher_grads: bool  # a teacher parameter got a gradient
    teachers_changed: bool  # a teacher's weights or buffers changed


@lru_cache(maxsize=None)
def probe(name: str) -> Probe:
    b = built(name)
    method = b.method()
    teachers = teacher_modules(b, method)
    trained = [k for k, net in method.networks.items() if any(p.requires_grad for p in net.parameters())]
    batch, step = last_epoch_step(b, method)
    eval_after_setup = all(in_eval_mode(t) for t in teachers)
    for t in teachers:  # a teacher trained in this process keeps its last training step's gradients
        t.zero_grad(set_to_none=True)
    teachers_before = [weights(t) for t in teachers]
    before = {k: weights(method.networks[k]) for k in trained}
    terms = method.training_step(batch, step)
    eval_after_step = all(in_eval_mode(t) for t in teachers)
    reached, finite = {}, {}
    if method.manual_optimization:  # it stepped its own optimizers: what it trains has moved
        for k in trained:
            after = method.networks[k].state_dict()
            reached[k] = any(not torch.equal(v, before[k][key]) for key, v in after.items())
            finite[k] = all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    else:
        sum(terms.values()).backward()
        for k in trained:
            grads = [p.grad for p in method.networks[k].parameters() if p.requires_grad and p.grad is not None]
            reached[k] = bool(grads)
            finite[k] = all(torch.isfinite(g).all() for g in grads)
    return Probe(
        method, teachers, terms, eval_after_setup, eval_after_step, trained, reached, finite,
        teacher_grads=any(p.grad is not None for t in teachers for p in t.parameters()),
        teachers_changed=any(not torch.equal(v, was[k]) for t, was in zip(teachers, teachers_before)
                             for k, v in t.state_dict().items()),
    )


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_one_step_gives_finite_scalar_terms_named_by_strings(name, regime):
    terms = probe(name).terms
    assert isinstance(terms, dict) and terms, f"{name}: training_step must return a non-empty dict of loss terms"
    for key, value in terms.items():
        assert isinstance(key, str), f"{name}: term name {key!r} is not a str"
        assert torch.is_tensor(value) and value.dim() == 0, f"{name}: term '{key}' is not a 0-dim tensor: {value!r}"
        assert torch.isfinite(value), f"{name}: term '{key}' is {float(value)}"


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_gradients_reach_every_trained_network(name, regime):
    p = probe(name)
    how = "changed in a step" if p.method.manual_optimization else "got a gradient"
    assert [k for k in p.trained if not p.reached[k]] == [], f"{name}: these trained networks never {how}"
    assert [k for k in p.trained if not p.finite_grads[k]] == [], f"{name}: non-finite gradients (or weights)"


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_teachers_stay_frozen_and_out_of_the_trained_networks(name, regime):
    p = probe(name)
    teacher_params = {id(q) for t in p.teachers for q in t.parameters()}
    network_params = {id(q) for net in p.method.networks.values() for q in net.parameters()}
    assert not teacher_params & network_params, f"{name}: a teacher is (part of) a trained network"
    assert not p.teacher_grads, f"{name}: a teacher parameter got a gradient"
    assert not p.teachers_changed, f"{name}: a teacher's weights or buffers changed in a step"


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_teachers_are_in_eval_mode_after_setup_and_after_a_step(name, regime):
    p = probe(name)
    assert p.teachers_eval_after_setup, f"{name}: a teacher (or a module in it) is in training mode after setup"
    assert p.teachers_eval_after_step, f"{name}: a teacher (or a module in it) is in training mode after a step"


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_describe_is_json(name, regime):
    for method in (built(name).method(), probe(name).method):  # as built, and after setup and a step
        assert json.loads(json.dumps(method.describe())), f"{name}: describe() is empty"


class _SnapshotAfterEpoch(StageProgress):
    """Copies the stage directory right after epoch ``epoch``'s checkpoint and log line are written (the loop
    notes each epoch then): what a run killed at that point leaves behind."""

    def __init__(self, epoch: int, directory: Path, copy_to: Path) -> None:
        super().__init__(enabled=False)
        self.left, self.directory, self.copy_to = epoch, directory, copy_to

    def note(self, text: str) -> None:
        super().note(text)
        self.left -= 1
        if self.left == 0:
            shutil.copytree(self.directory, self.copy_to)


def _fit(b: Built, directory: Path, progress: StageProgress) -> dict:
    """``Runner.distilled``'s training, in ``directory``: a fresh regime, seeded, fitted (resumed if begun)."""
    method = distilled_method(b.plan, b.seed, b.teachers)
    seed_everything(b.seed)
    trainer = Trainer(b.recipe.engine, progress, fabric=b.runner.trainer.fabric)
    return trainer.fit(method, b.plan.splits, Stage(f"{b.recipe.method.name} seed {b.seed}", directory, b.seed,
                                                    b.recipe.train, b.plan.augmenter))


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_one_epoch_then_resume_equals_two_epochs_straight(name, regime, tmp_path):
    """Two epochs straight; the stage directory as it was right after epoch 1 (a kill there leaves exactly
    that), resumed by the engine from its ``last.pt`` in a fresh regime: bit-identical deliverable weights."""
    assert regime.recipe.train.epochs == 2
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    summary = _fit(regime, straight, _SnapshotAfterEpoch(1, straight, resumed))
    assert [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not (resumed / "summary.json").exists()
    again = _fit(regime, resumed, StageProgress(enabled=False))
    for which in ("last", "best"):
        a, b = deliverable_weights(straight, which), deliverable_weights(resumed, which)
        assert a.keys() == b.keys()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{name}: resumed {which} weights differ from the straight run's in {differ[:5]}"
    # Every network the regime trains, not only the deliverable (an EMA's student, a GAN's generator, peers).
    a, b = (ckpt.load(d / "checkpoints" / "last.pt")["networks"] for d in (straight, resumed))
    assert a.keys() == b.keys()
    differ = [f"{net}.{k}" for net in a for k in a[net] if not torch.equal(a[net][k], b[net][k])]
    assert not differ, f"{name}: resumed networks differ from the straight run's in {differ[:5]}"
    assert summary["test"] == again["test"] and summary["best_epoch"] == again["best_epoch"]
    logs = [[json.loads(line)["train"] for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (straight, resumed)]
    assert logs[0] == logs[1], f"{name}: the logged loss terms differ after resume"
    assert all(math.isfinite(v) for epoch in logs[0] for v in epoch.values())
    json.dumps(summary["method"])  # describe() after training, as the run's summary.json holds it
