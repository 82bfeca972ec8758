"""Many devices and machines through Lightning Fabric: DDP or FSDP, started by Fabric, torchrun or SLURM.

**Exact by construction.** Every rank draws the same *global* batch of ``train.batch_size`` rows in the seed's order
and augments it with the step's generator, as one process would, then keeps its own contiguous slice of
batch_size / world rows (``shard``). Losses are batch means and DDP averages the gradients, so a step on N ranks is
a step of one process on the global batch (to float rounding, for losses of one sample at a time), and the data order
does not depend on the world size: a checkpoint written by 2 ranks resumes on 1 and the other way round.

**Rank 0 decides, the others follow.** Only rank 0 reads or writes the run directory and the model cache. Where what
happens next depends on the disk (a cache hit, a stage already finished, the epoch to resume from, the best weights),
rank 0 reads it and broadcasts what it found (``decide``), so every rank takes the same branch and the collective
calls stay matched; ranks on other machines have disks of their own, and nothing assumes they share one.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch

from edgedistill.config import EngineConfig
from edgedistill.engine.devices import accelerator, world_size
from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.machine import available_cores
from edgedistill.models.modes import nothing_to_train

T = TypeVar("T")

#: How long a rank waits in a collective call. Rank 0 may hold the others at a broadcast while it waits for a model
#: cache entry another process trains (a shared cache), so this is longer than torch's 30 min default.
TIMEOUT = timedelta(hours=2)

_FABRIC: Any = None  # this process's launched Fabric: one process group per process, shared by every stage
_LAUNCHER: Any = None  # its launcher, known before the launch ends (the ranks it starts are signalled from then on)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch on ``device``. For CUDA, from page-locked memory and without blocking, so the copy overlaps the previous
    step's kernels (what a DataLoader with pin_memory does); on CPU the tensors as they are."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def make_fabric(cfg: EngineConfig) -> Any:
    """The Fabric a Trainer trains with: on several processes this process's launched one (``launch``)."""
    if world_size(cfg) > 1:
        return launch(cfg)
    from lightning_fabric import Fabric  # heavy import (~3-6 s): only when training starts

    prepare(cfg)
    return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, precision=cfg.precision)


def current() -> Any:
    """This process's launched Fabric, or None when it trains alone."""
    return _FABRIC


def is_rank_zero() -> bool:
    """True in a process that trains alone and in rank 0 of several: the one that writes files and prints results."""
    return _FABRIC is None or bool(_FABRIC.is_global_zero)


def _strategy(cfg: EngineConfig) -> Any:
    if world_size(cfg) == 1:
        return "auto"
    if cfg.strategy == "fsdp":
        from lightning_fabric.strategies import FSDPStrategy

        if accelerator(cfg) != "cpu":
            return FSDPStrategy(timeout=TIMEOUT)

        class CpuFSDP(FSDPStrategy):  # type: ignore[misc]
            """Fabric refuses FSDP off the GPU (it checks the strategy's exact type) and torch's FSDP wants an
            accelerator unless told the device; both run on CPU over gloo (tests/test_distributed_run.py), which is how
            the sharding is tested on machines without GPUs."""

            def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
                from torch.distributed.fsdp import FullyShardedDataParallel

                return FullyShardedDataParallel(module=module, sharding_strategy=self.sharding_strategy,
                                                device_id=torch.device("cpu"), **self._fsdp_kwargs)

        return CpuFSDP(timeout=TIMEOUT)
    from lightning_fabric.strategies import DDPStrategy

    class PerModuleDDP(DDPStrategy):  # type: ignore[misc]
        """DDP that searches each step's graph for unused parameters unless the network is set up with ``fixed``:
        a regime may leave one of its trained networks out of some steps' loss (a term not started yet), and DDP
        must then not wait for those gradients; but the search costs 1.14x per step on the quickstart's student
        (benchmarks/ddp_graph_search.py), so a network trained by a fixed loss (``Method.fixed_graph``) has its used
        parameters learnt once instead."""

        fixed = False  # set by ``set_up`` around the wrap of one network

        def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
            if not self.fixed:
                return super().setup_module(module)
            kept = self._ddp_kwargs  # (Fabric's wrap, CUDA stream included, with these two arguments changed)
            self._ddp_kwargs = {**kept, "find_unused_parameters": False, "static_graph": True}
            try:
                return super().setup_module(module)
            finally:
                self._ddp_kwargs = kept

    return PerModuleDDP(timeout=TIMEOUT, find_unused_parameters=True)


def prepare(cfg: EngineConfig) -> None:
    """Process-wide settings every Fabric needs before it starts: threads, and CUDA's deterministic kernels."""
    cores = available_cores()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif world_size(cfg) > 1 and accelerator(cfg) == "cpu":
        # The machine's cores shared by this machine's processes (torch would give each of them all the cores).
        torch.set_num_threads(max(1, cores // cfg.devices))
    elif torch.get_num_threads() > cores:
        # torch counts the cores of the CPU affinity; a container's CPU quota may allow fewer (machine.py).
        torch.set_num_threads(cores)
    if cfg.deterministic:
        # cuBLAS reads this when CUDA starts: without it, deterministic mode refuses (or warns on) some matmuls.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def launch(cfg: EngineConfig) -> Any:
    """This process's Fabric on ``world_size(cfg)`` ranks, launched once: started alone, it starts ranks 1..N-1 by
    running the same command again (Fabric's subprocess launcher); under torchrun or SLURM every rank was started by
    them. Later calls return the same Fabric (a process group is one per process)."""
    global _FABRIC, _LAUNCHER
    if _FABRIC is None:
        from lightning_fabric import Fabric

        prepare(cfg)
        fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                        strategy=_strategy(cfg), precision=cfg.precision)
        _LAUNCHER = getattr(fabric.strategy, "launcher", None)
        with _ranks_warn_once():
            fabric.launch()
        _FABRIC = fabric
    return _FABRIC


@contextlib.contextmanager
def _ranks_warn_once() -> Iterator[None]:
    """The ranks Fabric's launcher starts meanwhile (children of this process, given its environment) log torch's C++
    messages from ERROR up, unless the user set ``TORCH_CPP_LOG_LEVEL``: every rank runs the same steps, so rank 0 shows
    their warnings, once. The one we met that only another rank had was its peer leaving (a SIGTERM while the ranks
    connect made the rank whose peer went first print a 20-line TCPStore stack trace). This process's own level was
    set when it loaded torch."""
    if "TORCH_CPP_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    try:
        yield
    finally:
        os.environ.pop("TORCH_CPP_LOG_LEVEL", None)


def forward_signal(signum: int) -> None:
    """Send ``signum`` to the ranks this process started (Fabric's own launcher runs them as its children; torchrun
    and srun signal every rank themselves), so that they stop with it rather than lose their peer mid-collective."""
    for proc in getattr(_LAUNCHER, "procs", None) or []:
        if proc.poll() is None:
            proc.send_signal(signum)


def decide(fn: Callable[[], T], fabric: Any = None) -> T:
    """``fn()`` computed by rank 0 and received by every rank (alone: just ``fn()``). A UserInputError raised by rank 0
    (any EdgeDistillError: a refusal, a damaged file) is raised on every rank, so all stop together."""
    fabric = fabric or _FABRIC  # (a Trainer's own Fabric, else this process's launched one)
    if fabric is None or fabric.world_size == 1:
        return fn()
    if fabric.is_global_zero:
        try:
            got: Any = ("ok", fn())
        except EdgeDistillError as exc:  # (a refusal, a damaged file: exceptions the CLI turns into one line)
            fabric.broadcast(("error", exc))
            raise
        fabric.broadcast(got)
    else:
        got = fabric.broadcast(None)
    if got[0] == "error":
        raise got[1]
    return got[1]


def train_once(get_or_train: Callable[[Callable[[Path], T]], T], train: Callable[[Path], T],
               follow: Callable[[], Any]) -> T:
    """A cached training on several ranks: rank 0 runs ``get_or_train(train)`` (the cache's lookup, lock and publish)
    and tells the others whether it trains; if it does, they train along (``follow()``, writing nothing), and every
    rank returns rank 0's result."""
    fabric = _FABRIC
    if fabric is None or fabric.world_size == 1:
        return get_or_train(train)
    if fabric.is_global_zero:
        told: list[bool] = []

        def announced(partial: Path) -> T:
            told.append(True)
            fabric.broadcast(True)
            return train(partial)

        result = get_or_train(announced)
        if not told:
            fabric.broadcast(False)
        return fabric.broadcast(result)
    if fabric.broadcast(None):
        follow()
    return fabric.broadcast(None)


def set_up(net: torch.nn.Module, fabric: Any, fixed_graph: bool = False) -> torch.nn.Module:
    """``net`` placed and wrapped by Fabric for training. On several processes a network with nothing to train (a frozen
    copy a regime keeps) is only moved to the device: DDP refuses to wrap a module without gradients. ``fixed_graph``:
    every step's loss uses the same parameters of ``net`` (``Method.fixed_graph``), which DDP then learns once."""
    if fabric.world_size > 1 and nothing_to_train(net):
        return fabric.to_device(net)
    strategy = fabric.strategy
    if not hasattr(strategy, "fixed"):  # (one process, FSDP: nothing to choose)
        return fabric.setup_module(sync_batchnorm(net, fabric))
    strategy.fixed = fixed_graph
    try:
        return fabric.setup_module(sync_batchnorm(net, fabric))
    finally:
        strategy.fixed = False


def sync_batchnorm(net: torch.nn.Module, fabric: Any) -> torch.nn.Module:
    """Under DDP on CUDA, BatchNorm layers normalise with the global batch's statistics (SyncBatchNorm), as one process
    on the whole batch would. torch has no SyncBatchNorm on the CPU: there each rank normalises with its own slice's
    statistics (the running statistics kept are rank 0's), so a BatchNorm model on CPU ranks is close to, not equal to,
    the run on one process (docs/scale.md)."""
    if fabric.world_size == 1 or fabric.device.type != "cuda" or _fsdp_strategy(fabric):
        return net
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)


def _fsdp_strategy(fabric: Any) -> bool:
    from lightning_fabric.strategies import FSDPStrategy

    return isinstance(fabric.strategy, FSDPStrategy)


def shard(batch: dict[str, torch.Tensor], fabric: Any) -> dict[str, torch.Tensor]:
    """This rank's contiguous slice of the global batch (every rank drew the same one)."""
    world = fabric.world_size
    if world == 1:
        return batch
    n = len(batch["y"])
    per, rank = n // world, fabric.global_rank
    return {k: v[rank * per:(rank + 1) * per] if v.dim() and v.shape[0] == n else v for k, v in batch.items()}


def check_batch(batch_size: int, fabric: Any) -> None:
    if batch_size % fabric.world_size:
        raise UserInputError(f"train.batch_size: {batch_size} is not divisible by the {fabric.world_size} processes "
                             "(engine.devices x engine.num_nodes); each takes an equal slice of the global batch")


def mean_over_ranks(values: torch.Tensor, fabric: Any) -> torch.Tensor:
    """The mean of ``values`` over the ranks (alone: ``values``)."""
    if fabric.world_size == 1:
        return values
    return fabric.all_reduce(values.float(), reduce_op="mean")


def all_ranks(flag: bool, fabric: Any) -> bool:
    """True when ``flag`` holds on every rank (a decision every rank must take alike)."""
    if fabric.world_size == 1:
        return flag
    return bool(fabric.all_reduce(torch.tensor(float(flag), device=fabric.device), reduce_op="sum").item() == fabric.world_size)


def _fsdp(net: Any) -> Optional[Any]:
    """The FSDP module inside Fabric's wrapper, or None (no process group: nothing is sharded)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    from torch.distributed.fsdp import FullyShardedDataParallel

    inner = getattr(net, "_forward_module", net)
    return inner if isinstance(inner, FullyShardedDataParallel) else None


@contextlib.contextmanager
def full_weights(net: Any, rank0_only: bool = True) -> Iterator[torch.nn.Module]:
    """The module whose ``state_dict`` / ``load_state_dict`` are ``net``'s full weights: ``net`` itself, or under FSDP
    the sharded module in its full-state-dict mode (gathered to rank 0 on the CPU; ``rank0_only=False`` to load on every
    rank; Fabric's wrapper would read the local shards). Under FSDP a collective call: every rank must make it."""
    inner = _fsdp(net)
    if inner is None:
        yield net
        return
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    # (on CPU, offloading the gathered weights to the CPU crashes torch 2.13)
    offload = any(p.device.type != "cpu" for p in inner.parameters())
    with FSDP.state_dict_type(inner, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
                              FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only)):
        yield inner


def weights_of(net: Any) -> dict[str, torch.Tensor]:
    """``net``'s full weights on the CPU (under FSDP on rank 0; the other ranks get an empty dict)."""
    with full_weights(net) as module:
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _sharded(nets: dict[str, Any], name: str) -> Optional[Any]:
    """The FSDP module optimizer ``name`` steps: the network of that name, or the one network FSDP allows."""
    net = nets[name] if name in nets else (next(iter(nets.values())) if len(nets) == 1 else None)
    return _fsdp(net) if net is not None else None


def optimizer_state(nets: dict[str, Any], name: str, opt: Any) -> dict[str, Any]:
    """``opt.state_dict()``; under FSDP gathered in full to rank 0 and keyed like a plain optimizer's (parameters by
    position), so one process, or any number, can load it."""
    inner = _sharded(nets, name)
    if inner is None:
        return opt.state_dict()
    from torch.distributed.fsdp import FullyShardedDataParallel

    with full_weights(inner) as module:
        by_name = FullyShardedDataParallel.optim_state_dict(module, getattr(opt, "optimizer", opt))
    if not by_name:
        return {}  # (ranks other than 0)
    position = {fqn: i for i, fqn in enumerate(f for g in by_name["param_groups"] for f in g["params"])}
    return {"state": {position[k]: v for k, v in by_name["state"].items()},
            "param_groups": [{**g, "params": [position[f] for f in g["params"]]} for g in by_name["param_groups"]]}


def load_optimizer_state(nets: dict[str, Any], name: str, opt: Any, state: dict[str, Any]) -> None:
    """``opt.load_state_dict(state)`` for a state ``optimizer_state`` wrote, on any number of ranks."""
    inner = _sharded(nets, name)
    if inner is None:
        opt.load_state_dict(state)
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    raw = getattr(opt, "optimizer", opt)
    names = {id(p): n.replace("_fsdp_wrapped_module.", "") for n, p in inner.named_parameters()}
    fqn = [names[id(p)] for g in raw.param_groups for p in g["params"]]
    by_name = {"state": {fqn[int(i)]: v for i, v in state["state"].items()},
               "param_groups": [{**g, "params": [fqn[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    with full_weights(inner, rank0_only=False) as module:
        raw.load_state_dict(FullyShardedDataParallel.optim_state_dict_to_load(module, raw, by_name))


def clip_gradients(net: Any, max_norm: float) -> None:
    inner = _fsdp(net)
    if inner is not None:
        inner.clip_grad_norm_(max_norm)  # the norm over every rank's shard
    else:
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
