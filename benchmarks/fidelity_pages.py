"""Write the seed methods' protocol-budget measurements into their docs pages from the saved numbers (no training).

``seed_fidelity_{a,b,c}.py --protocol`` measure issue 24's items at docs/benchmarks.md's budget (seeds 0-4, the
shipped recipes' epochs) into ``results/seed_fidelity_*_protocol.json``. This rewrites the section "Measured at the
protocol's budget" of each item's page with the benchmark's own table for that item (the prose around it, written
by hand, says what the numbers mean). Run after a protocol pass: ``python benchmarks/fidelity_pages.py``.
"""
from __future__ import annotations

import importlib
from typing import Any

from edgedistill.io import read_json
from loss_pages import RESULTS, ROOT, rewrite

HEADING = "## Measured at the protocol's budget"
# script -> item -> page
PAGES = {
    "seed_fidelity_a": {"topo_kd": "docs/methods/topo_kd.md", "topo_anneal_init": "docs/methods/topo_kd.md",
                        "bdkd": "docs/methods/bdkd.md", "amc": "docs/losses/amc.md"},
    "seed_fidelity_b": {"ceskd": "docs/methods/ceskd.md", "ceskd_chain": "docs/methods/ceskd.md",
                        "cudfkd": "docs/methods/cudfkd.md", "cgan_kd": "docs/methods/cgan_kd.md"},
    "seed_fidelity_c": {"modality_gram": "docs/losses/modality_gram.md", "time_aware": "docs/losses/time_aware_kd.md"},
}


def _passes(saved: dict[str, Any]) -> list[dict[str, Any]]:
    return saved.get("passes") or ([saved["meta"]] if "meta" in saved else [])


def section(script: str, saved: dict[str, Any], items: list[str]) -> list[str]:
    table = importlib.import_module(script).table  # each script's own table, as in its results file
    passes = [p for p in _passes(saved) if "--protocol" in p["command"]]
    made = "; ".join(f"`{p['command']}` on {p['date']}" for p in passes)
    lines = [HEADING, "", f"{made} ([{script}_protocol.md](../../benchmarks/results/{script}_protocol.md); written "
             "into this page by `python benchmarks/fidelity_pages.py`): seeds 0-4, every student and teacher at its "
             "shipped recipe's epochs, test metric of the best-on-validation epoch (*best*) and of the last epoch, "
             "mean ± sample std; *paired Δ* = the arm minus the student alone on the same seed (same initialisation and "
             "batches), + is better.", ""]
    for item in items:
        rows = [r for r in saved["rows"] if r["item"] == item]
        if rows:
            lines += [f"`{item}`:", "", *table(rows), ""]
    return lines[:-1]


def main() -> None:
    for script, items in PAGES.items():
        path = RESULTS / f"{script}_protocol.json"
        if not path.is_file():
            print(f"skip {script}: {path.relative_to(ROOT)} not found (python benchmarks/{script}.py --protocol)")
            continue
        saved = read_json(path)
        for page in dict.fromkeys(items.values()):
            mine = [i for i, p in items.items() if p == page]
            if not any(r["item"] in mine for r in saved["rows"]):  # (a pass with --only left this page's items out)
                continue
            rewrite(ROOT / page, section(script, saved, mine))
            print(f"wrote {page}")


if __name__ == "__main__":
    main()
