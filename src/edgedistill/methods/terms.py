"""Bind a recipe's loss terms to registered loss functions by argument name, and the regime made of them.

A loss declares the tensors it needs through its parameter names (``student_logits``, ``teacher_logits``,
``target``, ...); every other parameter is a hyperparameter the term may set. Binding happens once, when
the method is built, so a misspelt hyperparameter or a loss that needs a missing teacher fails before
training starts, naming the term.

``TermsMethod`` is every regime whose loss is the recipe's weighted terms (``method.terms``): offline KD and
its chains, and the regimes that only change where the soft target comes from (averaged teachers, a random
teacher per step, a virtual teacher), which override ``teacher_logits``. The recipe weights the losses; the
regime supplies the tensors.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import StageConfig, TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import Teachers, evaluating
from edgedistill.params import Params, signature_params
from edgedistill.methods.term_taps import (
    FEATURE_ROLES, TAP_KEYS, feature_taps, per_sample_shape, reads_maps, tap_spec, tapped, tapped_features,
)
from edgedistill.registry import LOSSES

# Tensor roles a method can provide. Aliases name the same tensor: outputs are "logits" for
# classification and "out" for regression, and a loss uses whichever name reads right.
ROLES = (
    "student_logits", "student_out", "teacher_logits", "teacher_out", "target", "index",
    "student_feat", "teacher_feat", "student_emb", "teacher_emb",
)
TEACHER_ROLES = ("teacher_logits", "teacher_out", "teacher_feat", "teacher_emb")
# Constructor arguments of a loss module that the method fills in from the data and the models.
MODULE_ARGS = ("student_shape", "teacher_shape", "n_data", "train_labels")


@dataclass
class BoundTerm:
    label: str  # name logged for this term (loss name, suffixed when a loss appears twice)
    fn: Optional[Callable[..., torch.Tensor]]  # the function, or the built module (None until built)
    weight: float
    roles: tuple[str, ...]
    params: dict[str, Any]  # hyperparameters: call arguments of a function, constructor arguments of a module
    # feature role -> tap spec, e.g. {"student_feat": "blocks.2"}; a tuple when the term names several taps of one
    # network (``student_tap: [stage1, feat]``, FSP/KD-SVD/ReviewKD): the loss then gets the list of their maps.
    taps: dict[str, Union[str, tuple[str, ...]]]
    key: str = ""  # the term's recipe path, for errors: "method.terms[2]"
    module_class: Optional[type] = None  # a loss with trainable parts, built once shapes are known
    config: Optional[TermConfig] = None  # the recipe's term: its schedule (start_epoch, warmup_epochs, ramp)
    call_params: dict[str, Any] = field(default_factory=dict)  # a module's forward hyperparameters (FT's objective)
    network: str = ""  # a module's entry in the method's networks ("loss_<label>")
    share: Optional[str] = None  # staged training: terms of different stages with one share key use one module

    @property
    def needs_teacher(self) -> bool:
        return any(r in TEACHER_ROLES for r in self.roles)

    def __call__(self, tensors: dict[str, torch.Tensor], step: Optional[Step] = None) -> torch.Tensor:
        """The weighted loss; with ``step``, times the term's schedule factor. A term not started yet is not
        computed at all (a loss module with state, a memory bank, must not move) and logs 0."""
        factor = self.config.factor(step.epoch) if self.config is not None and step is not None else 1.0
        if factor == 0.0:
            return next(iter(tensors.values())).new_zeros(())
        args = {r: tapped(tensors, r, self.taps[r]) if r in self.taps else tensors[r] for r in self.roles}
        extra = self.call_params if self.module_class is not None else self.params
        weight = self.weight if factor == 1.0 else self.weight * factor
        return weight * self.fn(**args, **extra)  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        sched = {}
        if self.config is not None and self.config.scheduled:
            sched = {k: getattr(self.config, k) for k in ("start_epoch", "warmup_epochs", "ramp")}
        return {"loss": self.label, "weight": self.weight, **self.params, **self.call_params, **sched}


def bind_terms(terms: list[TermConfig], task: str, key: str = "method.terms") -> list[BoundTerm]:
    if not terms:
        raise UserInputError(f"{key}: at least one loss term is needed, e.g. [{{loss: ce, weight: 1.0}}]")
    bound: list[BoundTerm] = []
    seen: dict[str, int] = {}
    for i, term in enumerate(terms):
        where = f"{key}[{i}]"
        entry = LOSSES.entry(term.loss, key=f"{where}.loss")
        wants = entry.meta.get("task")
        if wants and wants != task:
            raise UserInputError(f"{where}: loss '{term.loss}' is for {wants}, but the dataset is a {task} task")
        is_module = inspect.isclass(entry.obj)
        call = entry.obj.forward if is_module else entry.obj
        sig = inspect.signature(call)
        roles = tuple(p for p in sig.parameters if p in ROLES)
        params = dict(term.params)
        specs = {net: params.pop(tap_key, None) for net, tap_key in TAP_KEYS.items()}
        taps = {}
        for net, tap_key in TAP_KEYS.items():
            reads = [r for r in roles if r in FEATURE_ROLES and FEATURE_ROLES[r][0] == net]
            if specs[net] is not None and not reads:
                raise UserInputError(f"{where}.{tap_key}: loss '{term.loss}' reads no {net} features, so it takes no {tap_key}")
            for r in reads:
                taps[r] = tap_spec(specs[net], f"{where}.{tap_key}") if specs[net] is not None else FEATURE_ROLES[r][2]
                if isinstance(taps[r], tuple) and not reads_maps(call, r):
                    raise UserInputError(f"{where}.{tap_key}: loss '{term.loss}' reads one {net} feature map, got a list "
                                         f"of {len(taps[r])} taps; give one tap")
        hyper_fn = entry.obj.__init__ if is_module else entry.obj
        # A module's forward may take hyperparameters too (what it computes, per term): set at each call.
        forward_keys = set(inspect.signature(call).parameters) - set(ROLES) if is_module else set()
        call_params = {k: params.pop(k) for k in list(params) if k in forward_keys}
        if call_params:
            signature_params(call, skip=ROLES).parse(call_params, where, what=f"loss '{term.loss}'")
        # The loss's signature is its parameter declaration: typed hyperparameters, checked like method params.
        signature_params(hyper_fn, skip=ROLES + MODULE_ARGS).parse(params, where, what=f"loss '{term.loss}'")
        count = seen.get(term.loss, 0)
        seen[term.loss] = count + 1
        label = term.loss if count == 0 else f"{term.loss}_{count + 1}"
        fn = None if is_module else entry.obj
        module_class = entry.obj if is_module else None
        bound.append(BoundTerm(label, fn, float(term.weight), roles, params, taps, where, module_class, term, call_params))
    return bound


@dataclass
class OwnTerm:
    """A recipe term weighting one of a regime's own losses (CA-MKD's ``inter``, TGD's ``orth``): the loss is the
    regime's computation, the weight and schedule are the recipe's, like a registered loss's."""

    label: str
    weight: float
    config: TermConfig

    def describe(self) -> dict[str, Any]:
        return {"loss": self.label, **self.config.model_dump(exclude={"loss"})}


def bind_own_terms(terms: Sequence[TermConfig], own: dict[str, str], defaults: Sequence[TermConfig], method: str,
                   key: str = "method.terms") -> list[OwnTerm]:
    """The recipe's weights for a regime's own losses ``own`` (name -> doc); ``defaults`` when it gives none."""
    chosen = list(terms) or [t.model_copy() for t in defaults]
    seen: set[str] = set()
    for i, t in enumerate(chosen):
        if t.loss not in own:
            names = "; ".join(f"{n} ({doc})" for n, doc in own.items())
            raise UserInputError(f"{key}[{i}].loss: method '{method}' weights its own losses: {names}; got '{t.loss}'")
        if t.params:
            raise UserInputError(f"{key}[{i}]: '{t.loss}' takes weight, start_epoch, warmup_epochs and ramp; its "
                                 f"settings are method.params (got {', '.join(t.params)})")
        if t.loss in seen:
            raise UserInputError(f"{key}[{i}].loss: '{t.loss}' is weighted twice")
        seen.add(t.loss)
    return [OwnTerm(t.loss, float(t.weight), t) for t in chosen]


def weigh_own_terms(terms: list[OwnTerm], losses: dict[str, Callable[[], torch.Tensor]], step: Step,
                    like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each term's weighted loss; ``losses`` are called only for terms that are on (weight and schedule not 0), so
    a term that has not started costs nothing. An off term logs 0 (a scalar like ``like``)."""
    out = {}
    for t in terms:
        factor = t.config.factor(step.epoch)
        if factor == 0.0 or t.weight == 0.0:
            out[t.label] = like.new_zeros(())
            continue
        weight = t.weight if factor == 1.0 else t.weight * factor
        out[t.label] = weight * losses[t.label]()
    return out


class OwnTermsMethod(Method):
    """A regime whose losses are its own computations, weighted by the recipe's terms: it declares ``own_terms``
    (name -> doc) and ``default_terms``, calls ``super().__init__(student, info, terms, **params)``, and returns
    ``weigh_own_terms(self.terms, losses, step, like)`` from ``training_step``."""

    takes_terms = True

    def __init__(self, student: nn.Module, info: DataInfo, terms: Sequence[TermConfig] = (), **params: Any) -> None:
        super().__init__(student, info, **params)
        self.terms = bind_own_terms(terms, self.own_terms, self.default_terms, self.method_name())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "terms": [t.describe() for t in self.terms]}


#: Hinton KD with the quickstart's weights, 0.1 CE + 0.9 KD at T = 4: the default of the soft-target regimes.
HINTON_TERMS = (TermConfig(loss="ce", weight=0.1), TermConfig(loss="kd", weight=0.9, temperature=4.0))


class TermsParams(Params):
    cache_teacher: bool = Field(True, description="look the teacher's outputs up by training row instead of running "
                                                 "it each step (off, or ignored, when a term reads teacher features)")


class TermsMethod(Method):
    """A student trained on the recipe's weighted loss terms, with the tensors they read: the student's outputs and
    tapped features, the labels, and the teacher's outputs (``teacher_logits``, by default the one frozen teacher's,
    cached by row) and tapped features. Subclasses that build the soft target otherwise override
    ``teacher_logits``; teacher features are then not offered (there is no single teacher network to tap)."""

    Params = TermsParams
    takes_terms = True
    augmentation_support = frozenset({"teacher_input", "soft_targets"})
    #: True when ``teacher_logits`` is built without any teacher network (a virtual teacher from the labels).
    virtual_teacher: bool = False

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Teachers, terms: Sequence[TermConfig],
                 train: Optional[TensorData] = None, stages: Sequence[StageConfig] = (), **params: Any) -> None:
        super().__init__(student, info, **params)
        from edgedistill.methods.stages import bind_stages, enter_stage, resolve_trained

        # Staged training (methods/stages.py): every stage's terms are bound, tapped and built now; the current
        # stage's are ``self.terms`` (the last stage's until the engine's staged fit enters each in turn).
        self.stages = bind_stages(stages, info.task)
        self.frozen_modules: list[nn.Module] = []  # put in eval mode each step: what the current stage leaves alone
        self.terms = self.stages[-1].terms if self.stages else bind_terms(
            list(terms) or [t.model_copy() for t in self.default_terms], info.task)
        every = [t for s in self.stages for t in s.terms] or self.terms
        self.teachers = teachers
        self.teacher = teachers[-1].model if len(teachers) else None
        needy = next((t for t in every if t.needs_teacher), None)
        if needy is not None and self.teacher is None and not self.virtual_teacher:
            raise UserInputError(f"method.terms: loss '{needy.label}' needs a teacher but the recipe has no 'teacher' section")
        self._student_taps = feature_taps(student, every, "student")
        self._teacher_taps = feature_taps(self.teacher, every, "teacher") if self.teacher is not None else None
        if self._teacher_taps is not None and type(self).teacher_logits is not TermsMethod.teacher_logits:
            term = next(t for t in every if any(FEATURE_ROLES[r][0] == "teacher" for r in t.taps))
            raise UserInputError(f"{term.key}: loss '{term.label}' reads teacher features, but method "
                                 f"'{self.method_name()}' builds its soft target from {len(teachers)} teachers; "
                                 "use logit losses")
        # Tapped teacher features are cached by row with its outputs (Teachers.cache; up to a size).
        # (A regime without a teacher network, a virtual teacher, declares no cache_teacher.)
        self.cache_teacher = bool(getattr(self.params, "cache_teacher", False))
        if any(t.module_class is not None for t in every):
            self._build_loss_modules(train, every)
        if self.stages:
            resolve_trained(self)
            enter_stage(self, len(self.stages) - 1)

    def _build_loss_modules(self, train: Optional[TensorData], terms: list[BoundTerm]) -> None:
        """Losses with trainable parts (adapters, embedding heads, memory banks) are built from the shapes of
        what they read, found by one forward pass on zeros; they train and checkpoint with the student."""
        views = self.info.views
        batch = {v: torch.zeros(2, *views[v]) for v in {"x", *(t.view for t in self.teachers)}}
        batch.update(y=torch.zeros(2, dtype=torch.long), index=torch.arange(2))
        with evaluating(self.networks["student"], *self.teachers.models), torch.no_grad():
            tensors = self._tensors(batch, None, use_cache=False)
        filled = {
            "n_data": self.info.sizes.get("train", len(train) if train is not None else 0),
            "train_labels": train.y if train is not None and self.info.task == "classification" else None,
        }
        shared: dict[str, BoundTerm] = {}
        for term in terms:
            if term.module_class is None:
                continue
            if term.share is not None and term.share in shared:  # the same loss, settings and taps in a later stage
                term.fn, term.network = shared[term.share].fn, shared[term.share].network
                continue
            filled.update(student_shape=per_sample_shape(term, "student", tensors),
                          teacher_shape=per_sample_shape(term, "teacher", tensors))
            accepts = inspect.signature(term.module_class.__init__).parameters
            given = {k: v for k, v in filled.items() if k in accepts and k in MODULE_ARGS}
            try:
                term.fn = term.module_class(**given, **term.params)
            except (TypeError, ValueError) as exc:
                raise UserInputError(f"{term.key}: cannot build loss '{term.label}': {exc}") from None
            term.network = f"loss_{term.label}"
            while term.network in self.networks:  # (staged: one label, other settings in another stage)
                term.network += "_"
            self.networks[term.network] = term.fn
            shared.update({term.share: term} if term.share is not None else {})

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        if not len(self.teachers):
            return
        self.teachers.place(device)
        if self.cache_teacher:
            # Not when a teacher sees an augmented input every step: Teachers.cache then declines.
            taps = None if self._teacher_taps is None else [None] * (len(self.teachers) - 1) + [self._teacher_taps]
            self.teachers.cache(train, device, input_changes=self.teacher_input_changes, taps=taps)

    def teacher_logits(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> Optional[torch.Tensor]:
        """The soft target's logits for the batch (``step`` is None in the shape probe before training): the
        teacher's outputs, looked up in the cache or run live (with its taps when a term reads its features)."""
        if self.teacher is None:
            return None
        if not use_cache or not self.teachers.cached:
            return self.teachers.run(batch, taps=self._teacher_taps)
        out, *features = self.teachers.lookup(batch)
        if self._teacher_taps is not None:  # what the hooks would have captured, in the order of the taps' names
            self._teacher_taps.outputs = dict(zip(self._teacher_taps.paths, features))
        return out

    def _tensors(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> dict[str, torch.Tensor]:
        """Everything a term may read: outputs, labels, indices and the tapped features of both networks."""
        with self._student_taps or contextlib.nullcontext():
            s = self.networks["student"](batch["x"])
        tensors = {"student_logits": s, "student_out": s, "target": batch["y"], "index": batch["index"]}
        tensors.update(tapped_features("student", self._student_taps))
        t = self.teacher_logits(batch, step, use_cache)
        if t is not None:
            tensors.update(teacher_logits=t, teacher_out=t)
            tensors.update(tapped_features("teacher", self._teacher_taps))
        return tensors

    def soft_target_temperature(self) -> float:
        """The one temperature of the terms that read ``teacher_logits`` (their own or their loss's default; 1 when
        none has one), for a regime whose soft target depends on it (teachers averaged in probability space)."""
        temps = set()
        for term in self.terms:
            if "teacher_logits" not in term.roles:
                continue
            fn = term.module_class.__init__ if term.module_class is not None else term.fn
            default = inspect.signature(fn).parameters.get("temperature")
            if "temperature" in term.params or default is not None:
                temps.add(float(term.params.get("temperature", default.default if default is not None else 1.0)))
        if len(temps) > 1:
            raise UserInputError(f"method.terms: method '{self.method_name()}' builds one soft target, at one "
                                 f"temperature, but its terms use {sorted(temps)}; give them the same temperature")
        return temps.pop() if temps else 1.0

    @property
    def fixed_graph(self) -> bool:  # type: ignore[override]
        """Every step runs every term on the student alone: no stages, no term starting late, no term with trainable
        parts of its own (a loss module may skip a batch), and this class's step. (``Method.fixed_graph``.)"""
        return (not self.stages and type(self).training_step is TermsMethod.training_step
                and all(t.module_class is None and (t.config is None or t.config.start_epoch == 0) for t in self.terms))

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        for module in self.frozen_modules:  # (the engine put every network in training mode)
            module.eval()
        tensors = self._tensors(batch, step)
        return {term.label: term(tensors, step) for term in self.terms}

    def describe(self) -> dict[str, Any]:
        staged = {"stages": [s.describe() for s in self.stages]} if self.stages else {}
        return {**super().describe(), "terms": [t.describe() for t in self.terms], **staged,
                "teacher_cached": self.teachers.cached,
                **({"teacher_cache_declined": self.teachers.declined} if self.teachers.declined else {})}
