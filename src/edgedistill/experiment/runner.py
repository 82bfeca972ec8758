"""recipe -> runs: teacher (cached) -> student alone (cached) -> distilled student, over seeds -> report.

Everything is built and checked (data, models, method, one forward pass) before the run directory is
created, so bad input leaves nothing behind. A run directory that already holds the same resolved
config is resumed: finished stages are read back, an interrupted stage continues from its last epoch.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from edgedistill.augment.pipeline import Augmenter
from edgedistill.config import Recipe, TeacherConfig, load_recipe, recipe_to_dict
from edgedistill.data.dataset import DataSplits
from edgedistill.data.shared_outputs import shared_outputs
from edgedistill.engine import devices, distributed as dist, staged
from edgedistill.engine.loop import Stage, Trainer, deliverable_weights
from edgedistill.engine.evaluate import evaluate
from edgedistill.errors import UserInputError
from edgedistill.engine.loggers import require as require_loggers
from edgedistill.experiment import html_report, report, run_summary
from edgedistill.experiment.build import build_method, build_network, check_precision, dry_run, seed_everything
from edgedistill.experiment.parallel_seeds import StageWorkers, stage_kinds
from edgedistill.experiment.smoke import smoke_recipe
from edgedistill.experiment.teacher_cache import ModelCache, cache_key
from edgedistill.experiment.teacher_names import teacher_dirs, teacher_key, teacher_label
from edgedistill.experiment.workers import forwarded
from edgedistill.experiment import rundir
from edgedistill.io import make_dirs, read_json_record, remove_stale_temp, sha256_file, write_json, write_text
from edgedistill.methods.base import Method, TeacherNet
from edgedistill.methods.supervised import Supervised
from edgedistill.models import model_identity
from edgedistill.paths import default_cache_dir, inside
from edgedistill.progress import StageProgress
from edgedistill.registry import METHODS
from edgedistill.version import __version__


@dataclass
class Plan:
    recipe: Recipe
    splits: DataSplits
    data_key: str
    smoke: bool
    student: torch.nn.Module  # the checked, untrained student: its size goes into the report
    teachers: dict[int, list[TeacherConfig]]  # run seed -> the teachers the method needs, in training order
    teacher_dirs: dict[tuple[int, str], str]  # (run seed, teacher name) -> its folder in the run directory
    augmenter: Optional[Augmenter] = None  # the recipe's ``augment`` section, checked against the data


def plan(recipe: Recipe, smoke: bool = False, fold: Optional[int] = None) -> Plan:
    """Load the data and build every network and the method once, to fail early. Writes nothing. ``fold``: the
    cross-validation fold (``recipe.eval``) whose test part this run holds out; None for a holdout run."""
    from edgedistill.data import dataset_fingerprint
    from edgedistill.data.folds import fold_of
    from edgedistill.experiment.teacher_outputs import outputs_views
    from edgedistill.experiment.topology import prepare_with_pis

    check_precision(recipe)
    require_loggers(recipe.engine.loggers)
    the_fold = None if fold is None else fold_of(recipe.eval, fold)
    # Teachers given by their outputs: those join the data as views before the split (so they follow every row).
    splits = prepare_with_pis(recipe.data, seed=recipe.data.split.seed, add_views=outputs_views(recipe, smoke),
                              fold=the_fold)
    info = splits.info
    if recipe.report.classical:
        from edgedistill.experiment.classical import check_classical

        check_classical(recipe, info)
    method_cls = METHODS.get(recipe.method.name, key="method.name")
    plans = {seed: method_cls.teacher_plan(recipe, seed) for seed in recipe.seeds}
    specs = plans[recipe.seeds[0]]
    for spec in (s for ss in plans.values() for s in ss):
        view = spec.view
        if smoke and view not in info.views:
            # Synthetic smoke data has only "x": let a privileged-view teacher read it under its own name.
            for part in (splits.train, splits.val, splits.test):
                part.views[view] = part.views["x"]
            info.views[view] = info.views["x"]
        for name in ("train", "val", "test"):
            if view not in getattr(splits, name).views:
                # The teacher is selected on validation and reported on test, on its own view.
                raise UserInputError(
                    f"{teacher_key(recipe, spec.name)}.view: the {name} split has no view '{view}' (for a .npz, add "
                    f"'test_{view}'; for channel subsets, data.views); the teacher reads it in every split"
                )
    teachers = [TeacherNet(t.name, build_network(t, info, teacher_key(recipe, t.name), t.view), t) for t in specs]
    student = build_network(recipe.student, info, "student")
    augmenter = Augmenter(recipe.augment, info) if recipe.augment is not None else None
    method = build_method(recipe, student, teachers, splits, augmenter)
    size = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    devices.check_plan(recipe, {k: size(n) for k, n in method.networks.items()},
                    {t.name: size(t.model) for t in teachers if not t.config.given}, method.manual_optimization,
                    any(t.select == "swa" for ts in plans.values() for t in ts),
                    {"train.batch_size": recipe.train.batch_size,
                     **{f"{teacher_key(recipe, t.name)}.train.batch_size": t.train.batch_size
                        for ts in plans.values() for t in ts if not t.given}}, method.own_backward)
    dry_run(splits, student, teachers, augmenter)
    return Plan(recipe, splits, dataset_fingerprint(recipe.data, seed=recipe.data.split.seed, fold=the_fold), smoke,
                student, plans, teacher_dirs(plans), augmenter)


def open_run_dir(out: Path, recipe: Recipe) -> Path:
    """Check that ``out`` is new, empty or this run's (to resume) and write its config.yaml; for a caller that
    holds the directory's lock (``rundir.DirLock``), as ``run`` does."""
    rundir.open_run_dir(out, recipe_to_dict(recipe), rundir.same_config(recipe))
    make_dirs(out)
    rundir.write_config(out, recipe_to_dict(recipe))
    return out


class Runner:
    def __init__(self, p: Plan, run_dir: Path, progress: StageProgress,
                 on_epoch: Optional[Callable[[int, dict], None]] = None) -> None:
        self.p, self.r, self.dir, self.progress, self.on_epoch = p, p.recipe, run_dir, progress, on_epoch
        cache_root = run_dir / "cache" if p.smoke else default_cache_dir(self.r.cache_dir)
        self.cache = ModelCache(cache_root)
        self.trainer = Trainer(self.r.engine, progress)
        self.read_back: set[str] = set()  # cache entries already said to be reused (each seed reads a shared teacher)

    # -- cached networks (teachers, assistants, the student alone) -----------------------------------
    def _cached(
        self, role: str, label: str, cfg: Any, train_cfg: Any, seed: int, view: str,
        subset: Optional[float] = None, parent: Optional[tuple[TeacherNet, str]] = None, augment: bool = False,
        select: str = "best",
    ) -> tuple[torch.nn.Module, dict]:
        info = self.p.splits.info
        parts: dict[str, Any] = {
            "version": __version__,  # a new toolkit version may train differently: never reuse across versions
            "precision": self.r.engine.precision,
            "role": role,
            "data": self.p.data_key,
            "model": model_identity(cfg.model, cfg.kwargs),
            "train": train_cfg.model_dump(mode="json"),
            "seed": seed,
            "view": view,
        }
        if subset is not None:
            parts["train_subset"] = subset
        augmenter = self.p.augmenter if augment else None
        if augmenter is not None:  # the student alone trains on what the student sees (augmented, maybe mixed)
            parts["augment"] = {"student": augmenter.describe()["student"], "mix": augmenter.describe()["mix"]}
        if parent is not None:  # a distilled network depends on everything that made its teacher
            parts["distilled_from"] = parent[1]
            parts["terms"] = [t.model_dump(mode="json") for t in cfg.terms]
        if select != "best":  # the entry holds that checkpoint's weights; "best" adds nothing: existing caches stay valid
            parts["select"] = select
        key = cache_key(parts)
        net = build_network(cfg, info, role, view, seed=seed)

        def fit(partial: Path) -> dict:
            from edgedistill.methods.offline import OfflineDistillation

            seed_everything(seed)
            splits = self.p.splits.view_as_x(view)
            if subset is not None:
                splits = splits.train_subset(subset, seed)
            # A copy trains: FSDP shards the module it wraps in place, and ``net`` takes the full weights below.
            trained = copy.deepcopy(net)
            if parent is None:
                method: Any = Supervised(trained, info)
            else:
                method = OfflineDistillation(trained, info, parent[0], cfg.terms, train=splits.train)
            stage = Stage(f"{label} seed {seed}", partial, seed, train_cfg, augmenter, swa=select == "swa")
            return self.trainer.fit(method, splits, stage)

        def train(partial: Path) -> tuple[dict, dict]:
            summary = fit(partial)
            return deliverable_weights(partial, select), summary

        # On several ranks, rank 0 looks the entry up and trains it (the others along, writing nothing), then says.
        state, summary, cached = dist.train_once(lambda t: self.cache.get_or_train(key, parts, t), train,
                                                 lambda: fit(self.cache.entry(key).with_suffix(".partial")))
        net.load_state_dict(state)
        if cached and key not in self.read_back:
            self.progress.message(f"{label} seed {seed}: reused from cache ({self.cache.entry(key)})")
        self.read_back.add(key)  # (one trained here is read back by the next seeds: nothing more to say)
        summary = {**summary, "cache_key": key, "cached": cached}
        return net, summary

    def teachers(self, seed: int) -> list[tuple[TeacherNet, dict]]:
        """Every teacher run seed ``seed`` needs, trained in order (an assistant after its teacher) or reused."""
        info, device = self.p.splits.info, self.trainer.fabric.device
        done: dict[str, tuple[TeacherNet, str]] = {}
        out = []
        for spec in self.p.teachers[seed]:
            label = teacher_label(spec)
            if spec.given:  # loaded, read from outputs, or a checkpoint: evaluated (moved first) and reported, never trained
                net = build_network(spec, info, teacher_key(self.r, spec.name), spec.view, seed=spec.seed).to(device)
                splits = self.p.splits.view_as_x(spec.view)
                metrics = {split: evaluate(net, getattr(splits, split), info, device) for split in ("val", "test")}
                kind, path = next((k, getattr(spec, k)) for k in ("load", "outputs", "checkpoint") if getattr(spec, k))
                # Keyed by content, so an assistant distilled from it is retrained when the file changes.
                key = cache_key({"given": kind, "sha256": sha256_file(Path(path))[0], "data": self.p.data_key,
                                 "model": model_identity(spec.model, spec.kwargs) if spec.model else None,
                                 "view": spec.view})
                # Where it came from, in words (a loaded file, its format, a stripped prefix): report.md says it.
                source = (getattr(net, "edgedistill_loaded", None) or getattr(net, "edgedistill_outputs_only", None)
                          or f"{teacher_key(self.r, spec.name)}.{kind} '{path}'")
                summary = {"label": label, kind: str(path), "given": source, "cache_key": f"{kind}:{key}",
                           "val": {"best": metrics["val"], "last": metrics["val"]},
                           "test": {"best": metrics["test"], "last": metrics["test"]}}
            else:
                net, summary = self.teacher(spec, done[spec.distill_from] if spec.distill_from else None)
            t = TeacherNet(spec.name, net, spec)
            done[spec.name] = (t, summary["cache_key"])
            path = inside(self.dir, *self.p.teacher_dirs[(seed, spec.name)].split("/"), "summary.json", what="teacher name")
            if dist.is_rank_zero() and (read_json_record(path) or {}).get("cache_key") != summary["cache_key"]:
                write_json(path, summary)  # a teacher shared by all seeds: keep the record of how this run got it
            out.append((t, summary))
        return out

    def teacher(self, spec: Any, parent: Optional[tuple[TeacherNet, str]] = None) -> tuple[torch.nn.Module, dict]:
        """A teacher that is not given, trained (from ``parent``: an assistant) or read from the model cache."""
        return self._cached("teacher", teacher_label(spec), spec, spec.train, spec.seed, spec.view, spec.train_subset,
                            parent, select=spec.select)

    def baseline(self, seed: int) -> dict:
        net, summary = self._cached("student", "student", self.r.student, self.r.train, seed, "x", augment=True)
        if dist.is_rank_zero():
            write_json(inside(self.dir, "student_alone", f"seed{seed}", "summary.json"), summary)
        return summary

    def distilled(self, seed: int, teachers: list[TeacherNet]) -> dict:
        stage_dir = inside(self.dir, self.r.method.name, f"seed{seed}", what="method name")
        done = dist.decide(lambda: read_json_record(stage_dir / "summary.json"))  # (rank 0's disk decides)
        if done is not None:  # a damaged record is None: the stage's checkpoints give it again
            return done
        method = distilled_method(self.p, seed, teachers)
        seed_everything(seed)
        stage = Stage(f"{self.r.method.name} seed {seed}", stage_dir, seed, self.r.train, self.p.augmenter, on_epoch=self.on_epoch)
        return staged.fit(self.trainer, method, self.p.splits, stage)  # (a method with stages: one fit per stage)


def distilled_method(p: Plan, seed: int, teachers: list[TeacherNet]) -> Method:
    """The recipe's regime for run seed ``seed``, as a run trains it: a fresh student (initialised with the seed)
    and the method built around it and ``teachers`` (what ``Runner.teachers(seed)`` gives)."""
    student = build_network(p.recipe.student, p.splits.info, "student", seed=seed)
    return build_method(p.recipe, student, teachers, p.splits, p.augmenter)


def run(
    source: str | Path | dict[str, Any],
    overrides: Optional[list[str] | dict[str, Any]] = None,
    *,
    out: Optional[str | Path] = None,
    smoke: bool = False,
    progress: bool = True,
    command: Optional[str] = None,
    deploy_profile: Optional[Callable[[Path, bool], None]] = None,
    teachers_only: bool = False,
    on_teacher: Optional[Callable[[TeacherNet, dict], None]] = None,
    jobs: int | str = 1,
    fold: Optional[int] = None,
    prefix: str = "",
    on_epoch: Optional[Callable[[int, dict], None]] = None,
) -> dict[str, Any]:
    """Run a recipe end to end and return its summary (also written to ``<run>/summary.json``).

    ``deploy_profile(run_dir, smoke)`` is what ``report.profile`` calls once the run is written: the deploy layer
    sits above this one, so the entry points (``edgedistill.run``, ``edgedistill run``, ``edgedistill sweep``)
    pass ``edgedistill.deploy.profile.report_profile``; without it the profile is skipped with a message.
    ``teachers_only`` stops after the teacher stages (``edgedistill.fit_teacher``), and ``on_teacher(net, summary)``
    is given every teacher as it is trained or reused (the Python API returns the module itself).
    With ``eval.scheme`` other than holdout, every fold is a run of its own in ``<run>/fold<i>`` (``fold``: run
    only that one, as the cross-validation does for each), ``jobs`` of them at a time, and the summary is over
    folds x seeds (experiment/cross_validation.py). ``prefix`` starts every stage line (a sweep's parallel trials
    name their grid point; a fold adds ``[fold<i>]``). ``on_epoch(epoch, val_metrics)``: called after each epoch of the
    distilled student's stages (``Stage.on_epoch``; ``edgedistill tune`` prunes with it)."""
    from edgedistill.experiment import cross_validation, job_slots, parallel_seeds

    jobs, auto = job_slots.requested(jobs)  # "auto": 1 for the checks below, chosen once the plan is built
    recipe = smoke_recipe(load_recipe(source, overrides)) if smoke else load_recipe(source, overrides)
    folded = recipe.eval.scheme != "holdout"
    if fold is not None:
        recipe = cross_validation.fold_recipe(recipe, fold)
    elif folded:
        cross_validation.check_request(recipe, jobs, teachers_only)
    else:
        parallel_seeds.check_jobs(recipe, jobs, on_epoch)
    devices.check_run(recipe, jobs=jobs, on_epoch=on_epoch, folded=folded or fold is not None)
    p = plan(recipe, smoke, fold=fold if fold is not None or not folded else cross_validation.first_fold(recipe))
    jobs, why = parallel_seeds.auto_jobs(recipe, p, smoke, teachers_only, on_epoch, fold) if auto else (jobs, "")
    command = rundir.redact(command or rundir.cli_equivalent(source, overrides, smoke))
    run_dir = Path(out) if out else Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folds = None
    if folded and fold is None:  # (checks eval.only against the data's folds: before anything is written)
        folds = cross_validation.Folds(source, overrides, recipe, p, run_dir, smoke, progress, command, jobs, why)
    if devices.world_size(recipe.engine) > 1:  # every check passed: start the other ranks (they plan again, then wait)
        dist.launch(recipe.engine)

    def checked() -> str:  # (on rank 0 only, whose run directory it is; its refusal stops every rank)
        if not smoke:  # (a smoke run caches inside its run directory) the model cache must be a folder we can make
            rundir.cache_folder(recipe)
        rundir.open_run_dir(run_dir, recipe_to_dict(recipe), rundir.same_config(recipe))  # refuse before writing anything
        return str(run_dir)

    run_dir = Path(dist.decide(checked))
    zero = dist.is_rank_zero()
    try:
        # One process per run directory for the whole run (and its report and profile): logs never interleave.
        with rundir.DirLock(run_dir, "run directory") if zero else contextlib.nullcontext():
            if zero:
                open_run_dir(run_dir, recipe)  # checked again under the lock: another process may have started it meanwhile
                remove_stale_temp(run_dir, recursive=True)  # also teacher/, student_alone/, <method>/seed*/
            if folds is not None:
                return folds.run()
            # --jobs N: the seeds' stages N at a time, in this process and in workers that rebuild the plan from the recipe.
            job = {"source": source, "overrides": overrides, "run_dir": str(run_dir), "smoke": smoke, "prefix": prefix,
                   "command": command}
            parallel = StageWorkers(job, jobs, p, why) if jobs > 1 and not teachers_only else None
            with parallel or contextlib.nullcontext(), shared_outputs():  # (a frozen network's pass over a split: once)
                return _execute(p, run_dir, smoke, progress, command, deploy_profile, teachers_only, on_teacher, prefix,
                                on_epoch, parallel)
    except OSError as exc:  # e.g. a metrics append or a cache lock file on a full or read-only disk
        problem = rundir.as_environment_problem(exc, run_dir)
        if problem is None:
            raise
        raise problem from None


def _execute(p: Plan, run_dir: Path, smoke: bool, progress: bool, command: str,
             deploy_profile: Optional[Callable[[Path, bool], None]], teachers_only: bool = False,
             on_teacher: Optional[Callable[[TeacherNet, dict], None]] = None, prefix: str = "",
             on_epoch: Optional[Callable[[int, dict], None]] = None,
             parallel: Optional[StageWorkers] = None) -> dict[str, Any]:
    recipe = p.recipe
    kinds = stage_kinds(recipe)  # a seed's stages after its teachers: the student alone (unless that is the regime), distilled
    # Thread count and deterministic mode are process-wide torch settings: restore them for the caller.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    zero = dist.is_rank_zero()  # on several ranks, rank 0 alone shows progress and writes the run's files
    fold = p.splits.info.fold  # a fold of a cross-validation: every line says which (folds may run in parallel)
    try:
        prefix += f"[fold{fold['index']}] " if fold else ""
        with forwarded() or StageProgress(enabled=progress and recipe.engine.progress and zero, quiet=not zero,
                                          prefix=prefix) as prog:  # (forwarded: a fold shown by the cross-validation)
            prog.message(f"Run directory: {run_dir}")
            for note in p.splits.info.notes:  # what the loader inferred about the user's file: said, never silent
                prog.message(f"data: {note}")
            runner = Runner(p, run_dir, prog, on_epoch)
            baselines, results, classical = [], [], []
            trained: dict[str, dict[str, tuple[TeacherNet, dict]]] = {}  # teacher name -> cache key -> (net, summary)
            if parallel is not None:  # (two or more independent teachers: side by side first, then read in order below)
                parallel.train_teachers(prog)
            for seed in recipe.seeds:
                teachers = runner.teachers(seed)
                for t, t_summary in teachers:
                    trained.setdefault(t.name, {}).setdefault(t_summary["cache_key"], (t, t_summary))
                    if on_teacher is not None:
                        on_teacher(t, t_summary)
                if teachers_only or parallel is not None:  # (in parallel: every seed's stages once the teachers exist)
                    continue
                if "baseline" in kinds:
                    baselines.append(runner.baseline(seed))
                results.append(runner.distilled(seed, [t for t, _ in teachers]))
            if parallel is not None:
                done = parallel.run(prog)
                baselines = [done[("baseline", s)] for s in recipe.seeds if "baseline" in kinds]
                results = [done[("distilled", s)] for s in recipe.seeds]
            if recipe.report.classical and not teachers_only and zero:  # (inside: it reports progress, at the run's threads)
                from edgedistill.experiment.classical import classical_rows

                classical = classical_rows(recipe, p.splits, run_dir, prog)
    except KeyboardInterrupt:
        if zero and not fold:  # (Ctrl-C reaches every rank on this machine: one line, not one per rank; a fold's
            # cross-validation says it once for all its folds, which may be in other processes)
            rundir.say_interrupted("Finished stages and the last finished epoch are kept", command, run_dir)
        raise
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn

    if not zero:
        return dist.decide(dict)  # rank 0's summary, once written
    summary = run_summary.build(p, runner, trained, baselines, results, classical, run_dir, command, teachers_only)
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "report.md", report.markdown(summary))
    if recipe.report.profile:
        if deploy_profile is None:
            print("report.profile: skipped, no deployment step given (run through edgedistill.run or the CLI, or "
                  f"afterwards: edgedistill profile {run_dir})", file=sys.stderr)
        else:
            deploy_profile(run_dir, smoke)
    html_report.write_run_artifacts(run_dir, recipe, p.splits, runner.trainer.fabric.device, smoke=smoke)
    return dist.decide(lambda: summary)
