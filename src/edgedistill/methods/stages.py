"""Staged training: a method's ``stages``, each with its own terms, trained parts, epochs and lr (docs/stages.md).

A stage's ``train`` lists what its optimizer updates: ``student`` or a term's loss label (its loss module), either
followed by ``.<module path>`` for a part (``ft.translator``, ``student.blocks.0``). By default a stage trains the
student and what each of its terms trains (a loss module declares the parts an objective trains with
``trained_parts(**forward hyperparameters)``; otherwise the whole module). Everything else is frozen: its
parameters do not require grad (so the optimizer, built per stage, leaves them out) and its modules are put in
eval mode each step (BatchNorm statistics stay as they were). A term of a later stage with the same loss, settings
and taps as one of an earlier stage uses the same module (FT's paraphraser, trained first, then read frozen).

Epochs: every stage but the last gives ``epochs``; the last stage gives them too or takes ``train.epochs`` minus
the others'; they must add up to ``train.epochs`` (the run's length stays one number, as sweeps and reports read
it). Each stage has its own optimizer and lr schedule over its own epochs (torchdistill's stages likewise).

How a run trains them is ``engine/staged.py``: each stage but the last in ``stages/<name>/`` of the method's folder,
the last in the folder itself (so every reader of a finished run finds it where a single-stage run puts it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from torch import nn

from edgedistill.config import Recipe, StageConfig
from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.methods.terms import BoundTerm, TermsMethod


@dataclass
class BoundStage:
    name: str
    epochs: int
    lr: Optional[float]
    terms: list["BoundTerm"]
    train: Optional[list[str]]  # as the recipe gives it (None: the default)
    key: str  # "method.stages[1]", for errors
    trained: list[tuple[str, str]] = field(default_factory=list)  # (network, module path; "" for all of it)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "epochs": self.epochs, **({"lr": self.lr} if self.lr is not None else {}),
                "train": [f"{net}.{path}" if path else net for net, path in self.trained],
                "terms": [t.describe() for t in self.terms]}


def stage_epochs(recipe: Recipe) -> list[StageConfig]:
    """The recipe's stages with every stage's epochs filled in, or a UserInputError naming the key."""
    stages, total = recipe.method.stages, recipe.train.epochs
    for i, s in enumerate(stages[:-1]):
        if s.epochs is None:
            raise UserInputError(f"method.stages[{i}].epochs: every stage but the last gives its epochs "
                                 f"(the last takes train.epochs minus the others')")
    given = sum(s.epochs or 0 for s in stages[:-1])
    last = stages[-1].epochs if stages[-1].epochs is not None else total - given
    if given + last != total or last < 1:
        epochs = [s.epochs for s in stages[:-1]] + [stages[-1].epochs]
        raise UserInputError(f"method.stages: the stages' epochs {epochs} must add up to train.epochs ({total}), "
                             f"the last stage at least 1 (omit its epochs to take the rest)")
    if recipe.engine.devices * recipe.engine.num_nodes > 1:
        raise UserInputError("method.stages: staged training runs in one process (engine.devices: 1); a stage "
                             "changes what trains, which a DistributedDataParallel wrapper cannot follow")
    return [*stages[:-1], stages[-1].model_copy(update={"epochs": last})]


def bind_stages(stages: Sequence[StageConfig], task: str) -> list[BoundStage]:
    """Bind every stage's terms (keys ``method.stages[i].terms[j]``) and mark the terms that share a module."""
    from edgedistill.methods.terms import bind_terms

    bound = []
    for i, s in enumerate(stages):
        key = f"method.stages[{i}]"
        terms = bind_terms(list(s.terms), task, key=f"{key}.terms")
        seen: dict[str, int] = {}
        for t in terms:
            if t.module_class is not None:  # same loss, settings and taps: the n-th such term of each stage shares
                same = json.dumps([t.config.loss if t.config else t.label, t.params, t.taps], sort_keys=True, default=str)
                seen[same] = seen.get(same, 0) + 1
                t.share = f"{same}#{seen[same]}"
        bound.append(BoundStage(s.name, int(s.epochs or 0), s.lr, terms, s.train, key))
    return bound


def _parts(term: "BoundTerm") -> list[str]:
    """The parts of a term's module that its objective trains ("" for all of it); none if it has no parameters."""
    module = term.fn
    if not isinstance(module, nn.Module) or not any(True for _ in module.parameters()):
        return []
    declared = getattr(module, "trained_parts", None)
    return list(declared(**term.call_params)) if callable(declared) else [""]


def _covers(root: str, part: str) -> bool:
    """Training module path ``root`` trains (some of) ``part``: one is inside the other."""
    return root == "" or part == "" or root == part or part.startswith(root + ".") or root.startswith(part + ".")


def resolve_trained(method: "TermsMethod") -> None:
    """Each stage's ``trained`` from its ``train`` (or the default), checked: every entry names the student or a
    loss of the stage and a module with parameters, and every part a term trains is trained."""
    for stage in method.stages:
        modules = {t.label: t for t in stage.terms if t.network}
        entries = stage.train if stage.train is not None else ["student"] + [
            f"{t.label}.{p}" if p else t.label for t in stage.terms for p in _parts(t)]
        trained = []
        for j, entry in enumerate(entries):
            where = f"{stage.key}.train[{j}]"
            head, _, path = entry.partition(".")
            if head == "student":
                net = "student"
            elif head in modules:
                net = modules[head].network
            else:
                names = ", ".join(["student", *modules]) if modules else "student (no term of this stage has a module)"
                raise UserInputError(f"{where}: '{entry}' is not trainable here; a stage trains the student or a loss "
                                     f"module of its own terms, optionally '.<module path>': {names}")
            try:
                module = method.networks[net].get_submodule(path) if path else method.networks[net]
            except AttributeError:
                children = ", ".join(n for n, _ in method.networks[net].named_children()) or "none"
                raise UserInputError(f"{where}: '{entry}': '{head}' has no module '{path}' (its children: {children})") from None
            if not any(True for _ in module.parameters()):
                raise UserInputError(f"{where}: '{entry}' has no parameters to train")
            trained.append((net, path))
        for t in stage.terms:
            for part in _parts(t):
                if not any(net == t.network and _covers(path, part) for net, path in trained):
                    name = f"{t.label}.{part}" if part else t.label
                    raise UserInputError(f"{stage.key}.train: leaves '{name}' untrained, which term '{t.label}' "
                                         f"({t.key}) trains; add '{name}' to the stage's train list")
        stage.trained = trained


def enter_stage(method: "TermsMethod", index: int) -> None:
    """Make stage ``index`` current: its terms, only its trained parts requiring grad, the rest frozen."""
    stage = method.stages[index]
    method.terms = stage.terms
    roots = {net: _plain(method.networks[net]) for net in method.networks}
    trained = {id(p) for net, path in stage.trained
               for p in (roots[net].get_submodule(path) if path else roots[net]).parameters()}
    frozen: list[nn.Module] = []
    for net, module in roots.items():
        for p in module.parameters():
            p.requires_grad_(id(p) in trained)
        paths = [path for n, path in stage.trained if n == net]

        def is_frozen(name: str, paths: list[str] = paths) -> bool:  # neither inside a trained module nor containing one
            return not any(_covers(path, name) for path in paths)

        frozen += [sub for name, sub in module.named_modules()  # each frozen subtree once, by its top module
                   if is_frozen(name) and (name == "" or not is_frozen(name.rpartition(".")[0]))]
    method.frozen_modules = frozen


def _plain(net: nn.Module) -> nn.Module:
    """The network itself, under the engine's Fabric wrapper if it has one (module paths are the network's)."""
    inner = getattr(net, "_forward_module", None)
    return inner if isinstance(inner, nn.Module) else net
