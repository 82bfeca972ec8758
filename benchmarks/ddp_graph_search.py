"""What DDP's search for unused parameters costs per training step on the quickstart's networks (CPU, gloo).

With ``find_unused_parameters=True`` DDP walks the autograd graph after every forward pass to find the parameters the
loss did not use. edgedistill needs that for regimes whose terms start late or skip networks, and learns the used
parameters once (``static_graph=True``) for networks trained by a fixed loss (``Method.fixed_graph``: the teacher,
the student alone, offline terms without trainable parts). This measures both, and DDP with neither, on 2 processes
of one thread each, on the quickstart's student (cnn1d, width 16, depth 3, segments head; OSULeaf windows of 1 x 427)
and teacher (fcn), batch 16 per process: steps timed after a warm-up, the arms interleaved over rounds, the best
round kept. Prints a table and the machine's load; ``--write`` puts it into benchmarks/results/ddp_graph_search.md.

Run: ``python benchmarks/ddp_graph_search.py`` (about three minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

ARMS = {"search (find_unused_parameters)": {"find_unused_parameters": True},
        "learnt once (static_graph)": {"static_graph": True},
        "neither": {}}
NETS = {"student cnn1d": ("cnn1d", {"width": 16, "depth": 3, "head": "segments"}), "teacher fcn": ("fcn", {})}


def _rank(rank: int, port: int, steps: int, rounds: int, queue: object) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from edgedistill.models import build_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, y = torch.randn(16, 1, 427), torch.randint(0, 6, (16,))
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for net_name, (model, knobs) in NETS.items():
            for arm, kwargs in ARMS.items():
                torch.manual_seed(0)
                ddp = DistributedDataParallel(build_model(model, 1, 6, (427,), **knobs), **kwargs)
                opt = torch.optim.Adam(ddp.parameters())

                def step() -> None:
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(ddp(x), y).backward()
                    opt.step()

                for _ in range(10):
                    step()
                dist.barrier()
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                dist.barrier()
                ms = (time.perf_counter() - start) / steps * 1e3
                best[(net_name, arm)] = min(best.get((net_name, arm), float("inf")), ms)
    if rank == 0:
        queue.put(best)  # type: ignore[attr-defined]
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/ddp_graph_search.md")
    args = ap.parse_args()
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load = os.getloadavg()[0]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, args.steps, args.rounds, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    best = queue.get()
    for p in procs:
        p.join()
    lines = [f"# DDP's search for unused parameters, per step (`python benchmarks/ddp_graph_search.py`)", "",
             f"2 CPU processes over gloo, one thread each, batch 16 per process, {args.steps} steps per arm after 10 of "
             f"warm-up, best of {args.rounds} interleaved rounds; {os.cpu_count()} cores, load {load:.2f} at start, "
             f"{os.getloadavg()[0]:.2f} at the end.", "",
             "| network | " + " | ".join(f"{a} (ms/step)" for a in ARMS) + " | search / learnt once |",
             "|---|" + "---|" * (len(ARMS) + 1)]
    for net in NETS:
        row = [f"{best[(net, a)]:.2f}" for a in ARMS]
        ratio = best[(net, "search (find_unused_parameters)")] / best[(net, "learnt once (static_graph)")]
        lines.append(f"| {net} | " + " | ".join(row) + f" | {ratio:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = Path(__file__).resolve().parent / "results" / "ddp_graph_search.md"
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
        print(f"written: {out}")


if __name__ == "__main__":
    main()
