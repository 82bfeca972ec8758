"""The method contract: a training regime owns its networks and returns named loss terms for a batch.

The engine sums the terms, back-propagates, steps the optimizers, logs every term, evaluates
``deliverable()`` and checkpoints ``networks``. A teacher is not in ``networks``: it is frozen here
(``eval()``, ``requires_grad_(False)``) and run under ``no_grad``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from edgedistill.config import Recipe, TeacherConfig, TermConfig, TrainConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.teachers import TeacherNet, freeze
from edgedistill.params import Params
from edgedistill.registry import METHODS


@dataclass(frozen=True)
class Step:
    epoch: int  # 0-based
    step: int  # global optimisation step, 0-based
    epochs: int
    steps_per_epoch: int

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1)."""
        return self.step / max(1, self.epochs * self.steps_per_epoch)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class Method:
    """Base class: one trained network, ``student``, plus optional trainable extras (adapters).

    A regime declares its recipe parameters once, as ``Params`` (a pydantic model: defaults, bounds, choices,
    a doc per field); the constructor receives them as keywords and ``self.params`` holds them validated.
    The toolkit fills in the other constructor arguments by name: ``teacher`` (the last teacher, a
    ``TeacherNet``), ``teachers`` (all of them), ``terms`` (``method.terms``) and ``train`` (the training split).
    """

    #: The recipe's ``method.params``, declared once; ``describe()`` and ``list methods --params`` read it.
    Params: ClassVar[type[Params]] = Params
    #: The task the regime needs (e.g. "classification" for regimes that compare class distributions); None: any.
    #: Checked once, here, before anything is built; ``task_why`` says in the error what needs it.
    task: ClassVar[Optional[str]] = None
    task_why: ClassVar[str] = "compares class distributions"

    #: True for regimes that step their own optimizers inside ``training_step`` (mutual learning, GANs).
    manual_optimization: bool = False
    #: What the regime trains outside ``training_step``'s returned loss, with backward passes of its own through a
    #: network the engine trains (cgan_kd's warm start), in words; empty for the others. FSDP's wrapper allows a
    #: backward pass only through the engine, so the runner refuses FSDP for such a regime, naming this.
    own_backward: str = ""
    #: True where every step's loss uses the same parameters of each trained network (a plain loss on the labels).
    #: DDP then learns them on the first step (``static_graph``) instead of searching the graph for unused ones at
    #: every step, which a regime whose terms start, stop or skip networks needs (docs/scale.md measures the cost).
    fixed_graph: bool = False
    #: What the regime can do with an augmented batch; the runner refuses the rest before training, naming
    #: the key. "teacher_input": its teachers read ``batch["x_teacher"]`` every step (so an augmented teacher
    #: input is honoured); "soft_targets": its losses take mixed label probabilities in ``batch["y"]``.
    augmentation_support: frozenset[str] = frozenset()
    #: Set before ``setup``: a teacher reading view "x" sees a different input every step (no output cache).
    teacher_input_changes: bool = False

    def __init__(self, student: nn.Module, info: DataInfo, **params: Any) -> None:
        self.networks = nn.ModuleDict({"student": student})
        self.info = info
        self.teacher: Optional[nn.Module] = None
        if self.task is not None and info.task != self.task:
            raise UserInputError(f"data: method '{self.method_name()}' {self.task_why} and needs a {self.task} "
                                 f"dataset, got a {info.task} one")
        self.params = self.Params.parse(params, "method.params", what=f"method '{self.method_name()}'")

    @classmethod
    def method_name(cls) -> str:
        """The name the regime is registered under (its class name if it is not registered)."""
        return next((e.name for e in METHODS if e.obj is cls), cls.__name__)

    #: Whether ``method.terms`` means anything to this regime.
    takes_terms: bool = False
    #: A regime's own losses (name -> doc) that the recipe's terms weight, e.g. CA-MKD's ``inter``; {}: none.
    own_terms: ClassVar[dict[str, str]] = {}
    #: The terms used when a recipe gives no ``method.terms`` (the regime's documented default loss); (): required.
    default_terms: ClassVar[tuple[TermConfig, ...]] = ()
    #: Set (to what the regime trains instead) by regimes that train every network from scratch: a recipe
    #: with a ``teacher``/``teachers`` section is then refused, instead of the teacher being silently unused.
    trains_own_teacher: Optional[str] = None
    #: Upper bounds on numeric ``method.params`` in a ``--smoke`` run (experiment/smoke.py applies them), for
    #: regimes with a pipeline of their own (a GAN trained in ``setup``): it still runs, in seconds.
    smoke_caps: dict[str, int] = {}

    @classmethod
    def default_params(cls, recipe: Recipe) -> dict[str, Any]:
        """``method.params`` defaults that depend on the recipe (the recipe's own params override them)."""
        return {}

    @classmethod
    def teacher_plan(cls, recipe: Recipe, seed: int) -> list[TeacherConfig]:
        """The teachers this regime needs for run seed ``seed``, in training order (each one cached).
        Default: the recipe's ``teacher`` or ``teachers``. Chains that depend on the seed override this."""
        return recipe.teacher_specs()

    @classmethod
    def from_recipe(
        cls,
        recipe: Recipe,
        *,
        student: nn.Module,
        teacher: Optional[nn.Module],
        info: DataInfo,
        train: Optional[TensorData] = None,
        teachers: Optional[list[TeacherNet]] = None,
    ) -> "Method":
        """The regime for ``recipe``: its constructor gets ``student``, ``info``, whichever of ``teacher`` (the
        last of ``teachers``, the one a single-teacher regime distils from), ``teachers``, ``terms`` and
        ``train`` it names, and ``method.params`` (validated by ``Params``). ``teacher`` here is the module,
        kept for callers; the constructor gets its ``TeacherNet`` (so it knows the teacher's view)."""
        if recipe.method.terms and not cls.takes_terms:
            raise UserInputError(f"method.terms: method '{recipe.method.name}' takes no loss terms; set method.params")
        if teachers and cls.trains_own_teacher:
            raise UserInputError(
                f"teacher: method '{recipe.method.name}' uses no pre-trained teacher ({cls.trains_own_teacher}); "
                f"remove the 'teacher'/'teachers' section"
            )
        accepts = inspect.signature(cls.__init__).parameters
        last = teachers[-1] if teachers else teacher
        given = {"teacher": last, "teachers": teachers or [], "terms": list(recipe.method.terms), "train": train}
        filled = {k: v for k, v in given.items() if k in accepts}
        return cls(student, info, **filled, **{**cls.default_params(recipe), **recipe.method.params})

    @property
    def needs_teacher(self) -> bool:
        return self.teacher is not None

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        """Called once before training (and again on resume), after networks are on ``device``. ``val`` is
        for regimes that choose something on validation before training (ensemble weights)."""

    def after_step(self, step: Step) -> None:
        """Called after every optimizer step (EMA copies and other post-update bookkeeping)."""

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        params = [p for net in self.networks.values() for p in net.parameters() if p.requires_grad]
        return {"student": make_optimizer(params, cfg)}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    #: The entry of ``networks`` that is shipped (exported, selected on validation, reported as the method).
    deliverable_key: str = "student"

    def deliverable(self) -> nn.Module:
        return self.networks[self.deliverable_key]

    def evaluated(self) -> dict[str, nn.Module]:
        """Other networks worth reporting (online peers, a co-trained teacher, an ensemble), by name.
        The engine evaluates them every epoch and at the end; the deliverable is always evaluated."""
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-able: the regime's name and validated parameters; regimes add what they chose or learned."""
        return {"method": self.method_name(), **self.params.model_dump(mode="json")}
