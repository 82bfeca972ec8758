"""What the machine has, and what a run on several processes may ask: refused before anything is written.

``engine.devices`` processes on each of ``engine.num_nodes`` machines (engine/distributed.py trains them). Each check
raises ``UserInputError`` with one line naming the key.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from edgedistill.config import EngineConfig, Recipe
from edgedistill.errors import UserInputError
from edgedistill.machine import available_cores

#: FSDP shards each network's parameters over the ranks; below this many parameters per rank there is nothing worth
#: sharding (every edge model fits one device many times over) and the all-gathers only cost time.
MIN_PARAMS_PER_RANK = 1024


def world_size(cfg: EngineConfig) -> int:
    return cfg.devices * cfg.num_nodes


def accelerator(cfg: EngineConfig) -> str:
    """``engine.accelerator`` with ``auto`` resolved as Fabric resolves it: CUDA, else Apple's MPS, else CPU."""
    if cfg.accelerator != "auto":
        return cfg.accelerator
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def cluster_launcher() -> Optional[str]:
    """Which launcher started this process as one rank of several (torchrun, SLURM, or LOCAL_RANK and WORLD_SIZE set
    by hand or by Fabric's own launcher), or None for a process started alone."""
    env = os.environ
    if env.get("TORCHELASTIC_RUN_ID"):
        return "torchrun"
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "SLURM"
    if "LOCAL_RANK" in env and "WORLD_SIZE" in env:
        return "environment"
    return None


def check_engine(cfg: EngineConfig) -> None:
    """Refuse, before anything is written, devices or machines that are not there."""
    n, kind = cfg.devices, accelerator(cfg)
    if kind == "cuda" and torch.cuda.is_available() and n > torch.cuda.device_count():
        raise UserInputError(f"engine.devices: {n}, but this machine has {torch.cuda.device_count()} CUDA device(s); "
                             f"use at most {torch.cuda.device_count()} (engine.num_nodes for more machines)")
    if kind == "mps" and n > 1:
        raise UserInputError(f"engine.devices: {n}, but an Apple GPU (mps) is one device; use 1")
    if kind == "cpu" and cfg.precision == "16-mixed":
        # Fabric would train in bf16-mixed instead, with a warning, while the run's config says 16-mixed.
        raise UserInputError("engine.precision: '16-mixed' is float16 autocast, which needs a GPU; on the CPU use "
                             "bf16-mixed (what Fabric would silently switch to) or 32-true")
    cores = available_cores()
    if kind == "cpu" and n > cores:
        # gloo would start them, but processes beyond the cores only take turns: slower than fewer processes.
        raise UserInputError(f"engine.devices: {n} CPU processes, but this machine has {cores} core(s); use at most {cores}")
    if cfg.num_nodes > 1 and cluster_launcher() is None:
        raise UserInputError(
            f"engine.num_nodes: {cfg.num_nodes} machines, but this process was not started by a cluster launcher (no "
            "TORCHELASTIC_RUN_ID from torchrun, no SLURM_NTASKS from srun, no LOCAL_RANK/WORLD_SIZE); start the same "
            f"command on every machine with torchrun --nnodes {cfg.num_nodes} or srun (docs/scale.md), or use 1")
    check_launched(cfg)


def _count(name: str) -> Optional[int]:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None  # (SLURM writes uneven nodes as "2(x3),1": not compared)


def check_launched(cfg: EngineConfig) -> None:
    """The processes a launcher started must be the recipe's ``engine.devices`` on each of ``engine.num_nodes``
    machines. Otherwise Fabric stops with a traceback, or, with one device in the recipe, every process started by
    torchrun runs the whole run alone (and they fight over one ``--out``)."""
    world, who = world_size(cfg), cluster_launcher()
    if who == "torchrun":
        total, per_machine, flags = _count("WORLD_SIZE"), _count("LOCAL_WORLD_SIZE"), "--nnodes x --nproc-per-node"
    elif who == "SLURM" and world > 1:  # (alone in a batch script, SLURM_NTASKS may count tasks it does not run)
        total, per_machine, flags = _count("SLURM_NTASKS"), _count("SLURM_NTASKS_PER_NODE"), "--nodes x --ntasks-per-node"
    else:
        return
    if total is None or (total == world and per_machine in (None, cfg.devices)):
        return
    command = cli_command()
    if command not in (None, "run"):  # (sweep, tune: one process each, whatever the recipe says)
        raise UserInputError(f"{who} started {total} processes of `edgedistill {command}`, which runs in one process "
                             f"(--jobs for trials side by side; --storage shares a sweep or tune between machines); start "
                             f"it without {who}")
    each = f" ({per_machine} per machine)" if per_machine else ""
    fix = (f"engine.devices={per_machine} engine.num_nodes={total // per_machine}" if per_machine and not total % per_machine
           else f"engine.devices x engine.num_nodes = {total}")
    raise UserInputError(f"engine.devices: {cfg.devices} x engine.num_nodes: {cfg.num_nodes} = {world} process(es), but "
                         f"{who} started {total}{each}; {who}'s {flags} must equal them: set {fix}")


def check_one_process(cfg: EngineConfig, command: str) -> None:
    """Sweep and tune trials are runs of one process each (``--jobs`` runs several side by side): refused before
    anything is written, also when the sweep or tune is started from Python or under torchrun."""
    if world_size(cfg) > 1:
        raise UserInputError(f"engine.devices: {command}'s trials run one process each; use engine.devices=1 "
                             "(and --jobs for trials side by side)")


def check_run(recipe: Recipe, *, jobs: int, on_epoch: Any, folded: bool) -> None:
    """What a run on several devices cannot be combined with, refused before anything is written."""
    cfg = recipe.engine
    if world_size(cfg) == 1:
        return
    where = f"engine.devices: {cfg.devices}" + (f" x engine.num_nodes: {cfg.num_nodes}" if cfg.num_nodes > 1 else "")
    if jobs > 1:
        raise UserInputError(f"--jobs: {jobs} worker processes with {where} (one process per device); use one of them: "
                             "--jobs 1 with several devices, or engine.devices=1 with --jobs")
    if on_epoch is not None:
        raise UserInputError(f"{where}: a per-epoch callback (edgedistill tune's pruner) runs in one process; tune with "
                             "engine.devices=1")
    if folded:
        raise UserInputError(f"{where} with eval.scheme '{recipe.eval.scheme}': the folds run one process each; use "
                             "engine.devices=1 (and --jobs for folds in parallel), or eval.scheme: holdout")
    command = cli_command()
    if cluster_launcher() is None and command not in (None, "run"):
        # Fabric's launcher starts ranks 1..N-1 by running this process's command again: only `run` means one run.
        raise UserInputError(f"{where}: several devices are launched by `edgedistill run` (or torchrun/srun around it), "
                             f"not by `edgedistill {command}`; use engine.devices=1 here")


def cli_command() -> Optional[str]:
    """The ``edgedistill`` command this process runs (``run``, ``sweep``, ...), or None when it is not the command
    line (a Python call)."""
    argv = sys.argv
    cli = bool(argv) and (Path(argv[0]).name == "edgedistill" or argv[0].endswith(os.path.join("edgedistill", "__main__.py")))
    return (argv[1] if len(argv) > 1 else "") if cli else None


def check_plan(recipe: Recipe, trained: dict[str, int], teachers: dict[str, int], manual: bool, swa: bool,
               batch_sizes: dict[str, int], own_backward: str = "") -> None:
    """The regime's own limits on several devices: ``trained`` maps each network the distilled stage trains to its
    parameter count, ``teachers`` each teacher the run trains; ``manual`` is ``method.manual_optimization``, ``swa``
    whether a teacher keeps its weight average (``select: swa``); ``batch_sizes`` every stage's by recipe key;
    ``own_backward`` is ``method.own_backward``."""
    cfg = recipe.engine
    world = world_size(cfg)
    if world == 1:
        return
    for key, size in batch_sizes.items():
        if size % world:
            raise UserInputError(f"{key}: {size} is not divisible by the {world} processes (engine.devices x "
                                 "engine.num_nodes); each takes an equal slice of the global batch")
    name = recipe.method.name
    if manual:
        raise UserInputError(f"engine.devices: {cfg.devices}: method '{name}' steps its own optimizers (manual "
                             "optimisation), which DDP's gradient averaging does not cover; train it with engine.devices=1")
    banks = [t.loss for t in getattr(recipe.method, "terms", None) or [] if t.loss == "crd"]
    if banks:
        raise UserInputError(f"engine.devices: {cfg.devices}: loss 'crd' keeps memory banks of past embeddings, which "
                             "each rank would update with its own slice only; train it with engine.devices=1")
    if cfg.strategy != "fsdp":
        return
    if len(trained) != 1:
        raise UserInputError(f"engine.strategy: fsdp shards one trained network, method '{name}' trains "
                             f"{len(trained)} ({', '.join(trained)}); use strategy: ddp")
    if swa:
        raise UserInputError("engine.strategy: fsdp cannot average sharded weights (teacher select: swa); use strategy: ddp")
    if own_backward:
        raise UserInputError(f"engine.strategy: fsdp, but method '{name}' {own_backward} with its own backward passes, "
                             "which FSDP's wrapper allows only through the engine; use strategy: ddp")
    for what, count in {**{f"network '{k}'": v for k, v in trained.items()}, **{f"teacher '{k}'": v for k, v in teachers.items()}}.items():
        if count < MIN_PARAMS_PER_RANK * world:
            raise UserInputError(
                f"engine.strategy: fsdp, but {what} has {count} parameters, too few to shard over {world} processes "
                f"(at least {MIN_PARAMS_PER_RANK} per process, {MIN_PARAMS_PER_RANK * world}); use strategy: ddp")


def check_accelerator(cfg: EngineConfig) -> None:
    """Refuse, before anything is written, an accelerator or devices this machine does not have (Fabric would raise
    mid-run)."""
    if cfg.accelerator == "cuda" and not torch.cuda.is_available():
        raise UserInputError("engine.accelerator: 'cuda', but torch sees no CUDA device here (torch.cuda.is_available() "
                             f"is False; this torch is {torch.__version__}); use cpu or auto")
    mps = getattr(torch.backends, "mps", None)
    if cfg.accelerator == "mps" and not (mps is not None and mps.is_available()):
        raise UserInputError("engine.accelerator: 'mps' (Apple GPU), but torch sees no MPS device here; use cpu or auto")
    check_engine(cfg)
