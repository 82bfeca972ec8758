"""The training loop on Lightning Fabric: epochs, evaluation, checkpoints, exact resume, NaN guard.

A stage directory holds ``metrics.jsonl`` (one JSON line per epoch, every loss term logged),
``checkpoints/last.pt`` (full training state, rewritten atomically each epoch), ``checkpoints/best.pt``
(weights of the best-on-validation epoch), with ``Stage(swa=True)`` ``checkpoints/swa.pt`` (the weights averaged
over the final epochs, engine/swa.py) and, once finished, ``summary.json``. Resuming from
``last.pt`` gives the same result as an uninterrupted run: shuffling is seeded per epoch and the RNG
states are restored.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from edgedistill.augment.pipeline import step_generator
from edgedistill.config import EngineConfig, TrainConfig
from edgedistill.data.dataset import Batch, DataInfo, DataSplits
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine import distributed as dist
from edgedistill.engine.devices import check_accelerator
from edgedistill.engine.distributed import make_fabric, to_device
from edgedistill.engine.evaluate import epoch_scores, evaluate_val_test
from edgedistill.engine.loggers import StageLog
from edgedistill.engine.swa import WeightAverage, networks_reading_x
from edgedistill.errors import TrainingDiverged, UserInputError
from edgedistill.io import append_line, make_dirs, remove_stale_temp, write_json, write_text
from edgedistill.metrics import selection_score
from edgedistill.methods.base import Method, Step
from edgedistill.progress import StageProgress


def lr_factor(cfg: TrainConfig, step: int, total: int, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))
    if cfg.schedule == "step":
        passed = sum(epoch >= m * cfg.epochs for m in cfg.milestones)
        return cfg.gamma**passed
    return 1.0


@dataclass
class Stage:
    """Where and how one network (or one regime) is trained."""

    label: str  # shown on the progress bar and in errors, e.g. "teacher", "kd seed 1"
    directory: Path
    seed: int
    train: TrainConfig
    # Training-batch augmentation, ``augment(batch, generator) -> batch`` (edgedistill.augment.pipeline).
    augment: Optional[Callable[[Batch, torch.Generator], Batch]] = None
    # Also keep an equal-weight average of the weights over the last quarter of the epochs (stochastic weight
    # averaging, engine/swa.py): written as checkpoints/swa.pt and reported as summary["val"/"test"]["swa"].
    swa: bool = False
    # Called after each epoch's checkpoint with (epoch, validation metrics); may raise to stop the stage there
    # (``edgedistill tune`` reports to its pruner and raises ``optuna.TrialPruned``).
    on_epoch: Optional[Callable[[int, dict[str, float]], None]] = None


def _truncate_log(path: Path, epochs_kept: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from, and a line cut short by a kill."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            continue  # damaged bytes: dropped like a line cut short, rather than stopping the resume
        if record["epoch"] <= epochs_kept:
            kept.append(line)
    write_text(path, "".join(ln + "\n" for ln in kept))


_LAST_KEYS = ("networks", "optimizers", "epoch", "best_score", "best_epoch", "rng")


def _resume_state(ckdir: Path, label: str, networks: list[str], optimizers: list[str],
                  required: tuple[str, ...] = ()) -> Optional[dict[str, Any]]:
    """``last.pt``'s training state, or None to start the stage from scratch.

    ``last.pt`` and ``best.pt`` are only ever written by this loop, atomically and with a content digest, so one
    that cannot be read, does not match its digest or lacks what a resume needs was damaged after it was written
    (a disk fault, a copy cut short, an edit). The user could only delete it; we do that for them, keeping the
    bytes: both files are renamed ``<name>.corrupt-<time>`` (nothing deleted), a one-line warning says so, and the
    stage restarts from epoch 0. A restarted stage reaches the same numbers as an uninterrupted run (shuffling and
    initialisation are seeded), so the only cost is the time of the epochs redone."""
    last, best = ckdir / "last.pt", ckdir / "best.pt"
    if not last.exists():
        return None
    try:
        state = ckpt.load(last, hint="")  # the warning below says what happens instead
        missing = [k for k in (*_LAST_KEYS, *required) if k not in state]
        missing += [f"networks.{n}" for n in networks if n not in state.get("networks", {})]
        missing += [f"optimizers.{n}" for n in optimizers if n not in state.get("optimizers", {})]
        if missing:
            raise ckpt.UnreadableCheckpoint(f"checkpoint '{last}' lacks {', '.join(missing)}")
        if int(state["epoch"]) > 0:  # the best epoch's weights are read when the stage finishes: check them now
            if not best.is_file():
                raise ckpt.UnreadableCheckpoint(f"checkpoint '{best}' is missing while '{last}' is past epoch 0")
            ckpt.load(best, hint="")
        return state
    except ckpt.UnreadableCheckpoint as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = []
        for path in (last, best):
            if path.exists():
                target = path.with_name(f"{path.name}.corrupt-{stamp}")
                os.replace(path, target)
                moved.append(target.name)
        print(f"warning: {label}: {exc}; moved aside as {', '.join(moved)} in {ckdir}; restarting this stage from "
              f"epoch 0", file=sys.stderr)
        return None


#: Test-only (tests/test_interrupt.py). ``EDGEDISTILL_TEST_KILL_AFTER_EPOCH=N``: a stage SIGKILLs its own process (no
#: cleanup: only atomic writes survive) right after epoch N's log line and checkpoint, a hard kill at a deterministic
#: point; ``N:TERM`` sends SIGTERM instead (a cluster's time limit, which the command line turns into a clean stop).
TEST_KILL_AFTER_EPOCH = "EDGEDISTILL_TEST_KILL_AFTER_EPOCH"


def _test_kill_after(epoch: int) -> None:  # (not in --jobs' thread slot: that would kill the run's own process)
    at, _, name = os.environ.get(TEST_KILL_AFTER_EPOCH, "").partition(":")
    if at == str(epoch) and threading.current_thread() is threading.main_thread():
        os.kill(os.getpid(), signal.SIGTERM if name == "TERM" else signal.SIGKILL)


def _FabricModule() -> type:
    from lightning_fabric.wrappers import _FabricModule as cls

    return cls


def _finite_params(method: Method) -> bool:
    return all(torch.isfinite(p).all() for p in method.networks.parameters())


class Trainer:
    def __init__(self, engine: EngineConfig, progress: Optional[StageProgress] = None, fabric: Any = None) -> None:
        self.fabric = fabric or make_fabric(engine)
        self.progress = progress or StageProgress(enabled=False)
        self.deterministic = engine.deterministic
        self.loggers = list(engine.loggers)
        self._swa: Optional[WeightAverage] = None  # the running weight average of the stage being fitted

    def fit(self, method: Method, splits: DataSplits, stage: Stage) -> dict[str, Any]:
        fabric, cfg, info = self.fabric, stage.train, splits.info
        ckdir = stage.directory / "checkpoints"
        log_path = stage.directory / "metrics.jsonl"
        device = fabric.device
        if self.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # (no autotuned kernels)
        dist.check_batch(cfg.batch_size, fabric)
        zero = fabric.is_global_zero  # the one rank that reads and writes the stage's files

        for name in list(method.networks):
            # Fabric wraps each trained network (device placement, precision); the wrapper's state_dict
            # is the original module's, so checkpoints stay plain.
            if not isinstance(method.networks[name], _FabricModule()):
                method.networks[name] = dist.set_up(method.networks[name], fabric, method.fixed_graph)
        optimizers = method.optimizers(cfg)
        base_lrs = {k: [g["lr"] for g in o.param_groups] for k, o in optimizers.items()}
        start_epoch, best_score, best_epoch = 0, None, 0
        if zero:
            remove_stale_temp(stage.directory)
            remove_stale_temp(ckdir)
        # ``_save_last`` writes the running weight average into last.pt with the rest of the training state.
        self._swa = WeightAverage(cfg.epochs) if stage.swa else None
        # Rank 0 reads the checkpoint and every rank resumes from it (other machines have their own disks).
        state = dist.decide(lambda: _resume_state(ckdir, stage.label, list(method.networks), list(optimizers),
                                                  ("swa",) if stage.swa else ()), fabric)
        if state is not None:
            for name, net in method.networks.items():
                with dist.full_weights(net, rank0_only=False) as module:
                    ckpt.load_state_dict_checked(module, state["networks"][name], str(ckdir / "last.pt"))
            for name, opt in optimizers.items():
                dist.load_optimizer_state(method.networks, name, opt, state["optimizers"][name])
            start_epoch, best_epoch = int(state["epoch"]), int(state["best_epoch"])
            best_score = tuple(state["best_score"]) if state["best_score"] is not None else None
            ckpt.set_rng_state(state["rng"])
            if stage.swa:
                self._swa = WeightAverage.resumed(cfg.epochs, state["swa"])
            if zero:
                _truncate_log(log_path, start_epoch)
        else:
            if zero:
                make_dirs(stage.directory)
                _truncate_log(log_path, 0)  # a restart after a quarantined checkpoint: its epochs are redone
            self._save_last(method, optimizers, ckdir, 0, None, 0)
        if not method.manual_optimization:
            for name in list(optimizers):
                optimizers[name] = fabric.setup_optimizers(optimizers[name])
        method.setup(splits.train, device, val=splits.val)
        log = StageLog.open(self.loggers, stage, fabric, method)  # engine.loggers (rank 0 only)

        train = splits.train
        steps_per_epoch = train.num_batches(cfg.batch_size, drop_last=True)
        total_steps = steps_per_epoch * cfg.epochs
        self.progress.start(stage.label, total_steps, done=start_epoch * steps_per_epoch, epochs=cfg.epochs)
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            for net in method.networks.values():
                net.train()
            sums: dict[str, float] = {}
            gen = torch.Generator().manual_seed(stage.seed * 1_000_003 + epoch)
            for i, batch in enumerate(train.batches(cfg.batch_size, shuffle=True, generator=gen, drop_last=True)):
                step = Step(epoch, epoch * steps_per_epoch + i, cfg.epochs, steps_per_epoch)
                for name, opt in optimizers.items():
                    for group, base in zip(opt.param_groups, base_lrs[name]):
                        group["lr"] = base * lr_factor(cfg, step.step, total_steps, epoch)
                batch = to_device(batch, device)
                if stage.augment is not None:  # (on the global batch: the draws of a run on one process)
                    batch = stage.augment(batch, step_generator(stage.seed, step.step))
                terms = method.training_step(dist.shard(batch, fabric), step)
                total = sum(terms.values())
                # Every rank's terms, averaged: the log is the global batch's, and all ranks stop on a NaN together.
                logged = dist.mean_over_ranks(torch.stack([t.detach().float() for t in (total, *terms.values())]), fabric)
                if not torch.isfinite(logged[0]):
                    self._diverged(stage, dict(zip(terms, logged[1:])), epoch, step.step, ckdir)
                if not method.manual_optimization:
                    for opt in optimizers.values():
                        opt.zero_grad(set_to_none=True)
                    fabric.backward(total)
                    if cfg.grad_clip:
                        for net in method.networks.values():
                            dist.clip_gradients(net, cfg.grad_clip)
                    for opt in optimizers.values():
                        opt.step()
                method.after_step(step)
                for k, v in zip(("total", *terms), logged.tolist()):
                    sums[k] = sums.get(k, 0.0) + v
                self.progress.advance()
            if not dist.all_ranks(_finite_params(method), fabric):
                self._diverged(stage, {"parameters": torch.tensor(float("nan"))}, epoch, (epoch + 1) * steps_per_epoch, ckdir)
            val, others = epoch_scores(method.deliverable(), method.evaluated(), splits.val, info, device)
            val, others = dist.decide(lambda: (val, others), fabric)  # (every rank evaluated alike: rank 0's numbers decide)
            score = selection_score(val)
            improved = best_score is None or score > best_score
            if improved:
                best_score, best_epoch = score, epoch + 1
                weights = self._weights(method)  # (under FSDP a collective call: every rank gathers)
                if zero:
                    ckpt.save(ckdir / "best.pt", {"networks": weights, "epoch": epoch + 1,
                                                   "deliverable": method.deliverable_key}, digest_content=True)
            record = {
                "epoch": epoch + 1,
                "lr": optimizers[next(iter(optimizers))].param_groups[0]["lr"],
                "train": {k: v / max(1, steps_per_epoch) for k, v in sums.items()},
                "val": val,
                **({"val_others": others} if others else {}),
                "best": improved,
                "time_s": round(time.perf_counter() - t0, 4),
            }
            if self._swa is not None:
                self._swa.update(method.networks, epoch + 1)
            if zero:
                append_line(log_path, json.dumps(record))
                log.epoch(record)
            self._save_last(method, optimizers, ckdir, epoch + 1, best_score, best_epoch)
            _test_kill_after(epoch + 1)
            self.progress.note(_brief(val, best_epoch))
            if stage.on_epoch is not None:
                stage.on_epoch(epoch + 1, val)
        summary = self._finish(method, splits, stage, best_epoch)
        log.end(summary)
        return summary

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def _weights(method: Method) -> dict[str, Any]:
        """Every network's full weights on the CPU (under FSDP gathered to rank 0; the others get empty dicts)."""
        return {name: dist.weights_of(net) for name, net in method.networks.items()}

    def _save_last(self, method: Method, optimizers: dict, ckdir: Path, epoch: int, best: Optional[tuple], best_epoch: int) -> None:
        weights = self._weights(method)  # (every rank: gathering FSDP's shards is a collective call)
        opt_states = {k: dist.optimizer_state(method.networks, k, o) for k, o in optimizers.items()}
        if not self.fabric.is_global_zero:
            return
        ckpt.save(
            ckdir / "last.pt",
            {
                "networks": weights,
                "deliverable": method.deliverable_key,
                "optimizers": opt_states,
                "epoch": epoch,
                "best_score": list(best) if best is not None else None,
                "best_epoch": best_epoch,
                "rng": ckpt.rng_state(),
                **({"swa": self._swa.state()} if self._swa is not None else {}),
            },
            digest_content=True,
        )

    def _diverged(self, stage: Stage, terms: dict[str, torch.Tensor], epoch: int, step: int, ckdir: Path) -> None:
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["total"]
        self.progress.finish("diverged")
        raise TrainingDiverged(
            f"{stage.label}: loss term(s) {', '.join(repr(b) for b in bad)} became non-finite at epoch {epoch + 1}, "
            f"step {step}; training stopped. The last good checkpoint is kept at {ckdir / 'last.pt'}. "
            f"Try a lower train.lr, train.grad_clip, or smaller loss weights."
        )

    def _finish(self, method: Method, splits: DataSplits, stage: Stage, best_epoch: int) -> dict[str, Any]:
        last_val, last_test, last_others = self._scores(method, splits)
        best = dist.decide(lambda: ckpt.load(stage.directory / "checkpoints" / "best.pt", hint=_retrain_hint(stage.directory)),
                           self.fabric)
        weights = {n: {k: v.clone() for k, v in w.items()} for n, w in self._weights(method).items()}  # (copies: on CPU
        last_weights = dist.decide(lambda: weights, self.fabric)  # the live tensors, which best.pt overwrites; FSDP: on rank 0)
        for name, net in method.networks.items():
            with dist.full_weights(net, rank0_only=False) as module:
                module.load_state_dict(best["networks"][name])
        kinds = {"best": self._scores(method, splits), "last": (last_val, last_test, last_others)}
        if self._swa is not None:
            kinds["swa"] = self._averaged(method, splits, stage)
        for name, net in method.networks.items():  # leave the method as training left it
            with dist.full_weights(net, rank0_only=False) as module:
                module.load_state_dict(last_weights[name])
        summary = {
            "label": stage.label,
            "seed": stage.seed,
            "epochs": stage.train.epochs,
            "best_epoch": best_epoch,
            **({"swa_epochs": self._swa.epochs_averaged} if self._swa is not None else {}),
            "val": {kind: got[0] for kind, got in kinds.items()},
            "test": {kind: got[1] for kind, got in kinds.items()},
            "method": method.describe(),
        }
        if last_others:
            # Other networks at the deliverable's best epoch, at the last epoch (and averaged), same layout as above.
            from edgedistill.models import describe

            nets = method.evaluated()
            summary["others"] = {
                name: {"size": describe(nets[name]),
                       **{split: {kind: got[2][name][split] for kind, got in kinds.items()} for split in ("val", "test")}}
                for name in last_others
            }
        if self.fabric.is_global_zero:
            write_json(stage.directory / "summary.json", summary)
        self.progress.finish(_brief(kinds["best"][1], best_epoch, prefix="test "))
        return summary

    def _averaged(self, method: Method, splits: DataSplits, stage: Stage) -> tuple[dict, dict, dict]:
        """Put the weight average (BatchNorm statistics recomputed) into the networks, save it as ``swa.pt`` in
        ``best.pt``'s format, and score it like ``_finish`` scores best and last."""
        swa = self._swa
        assert swa is not None
        recompute = networks_reading_x(method.networks, method.deliverable(), method.evaluated().values())
        swa.apply(method.networks, recompute, splits.train, stage.train.batch_size, self.fabric.device, stage.seed)
        weights = self._weights(method)
        if self.fabric.is_global_zero:
            ckpt.save(stage.directory / "checkpoints" / "swa.pt", {"networks": weights, "epoch": stage.train.epochs,
                                                                   "deliverable": method.deliverable_key}, digest_content=True)
        return self._scores(method, splits)

    def _scores(self, method: Method, splits: DataSplits) -> tuple[dict, dict, dict]:
        """Validation and test metrics of the deliverable and of each reported network, with the weights loaded now."""
        device, info = self.fabric.device, splits.info
        others = {name: dict(zip(("val", "test"), evaluate_val_test(net, splits.val, splits.test, info, device)))
                  for name, net in method.evaluated().items()}
        return (*evaluate_val_test(method.deliverable(), splits.val, splits.test, info, device), others)


def _brief(metrics: dict[str, float], best_epoch: int, prefix: str = "val ") -> str:
    key = "acc" if "acc" in metrics else "rmse"
    return f"{prefix}{key} {metrics[key]:.3f} (best epoch {best_epoch})"


#: The weights a finished stage keeps: best on validation, the last epoch's, the weight average (``Stage(swa=True)``).
SELECTIONS = ("best", "last", "swa")


def deliverable_weights(stage_dir: Path, which: str) -> dict[str, Any]:
    """State dict of the shipped network from a finished stage: ``which`` is one of ``SELECTIONS``."""
    if which not in SELECTIONS:
        raise ValueError(f"which: expected one of {', '.join(SELECTIONS)}, got {which!r}")
    path = stage_dir / "checkpoints" / f"{which}.pt"
    if which == "swa" and not path.exists():
        raise UserInputError(f"teacher.select: 'swa' reads '{path}', which this stage did not write (it was trained "
                             f"without weight averaging); {_retrain_hint(stage_dir)} with select: swa")
    state = ckpt.load(path, hint=_retrain_hint(stage_dir))
    return state["networks"][state.get("deliverable", "student")]


def _retrain_hint(stage_dir: Path) -> str:
    return f"move the folder '{stage_dir}' aside and run the same command again to retrain this stage"


__all__ = ["Trainer", "Stage", "DataInfo", "check_accelerator", "deliverable_weights", "lr_factor", "make_fabric", "to_device"]
