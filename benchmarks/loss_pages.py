"""Write each baseline's measured rows into its docs page from the benchmark's saved numbers (no training).

Every loss page of issue 23's baselines ends with a section of measured results. Copying numbers by hand drifts from
the results files; this rewrites that last section of each page from ``results/quality_baselines.json`` (quality.py's
protocol) or, for FSP and KD-SVD, ``results/matched_channels.json`` (the same protocol with a channel-matched
teacher). Run after either benchmark: ``python benchmarks/loss_pages.py``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgedistill.io import read_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# method (quality.py's label) -> its page; the staged FitNet is described on the stages page.
PAGES = {m: f"docs/losses/{m}.md" for m in ("nst", "cc", "ickd", "mlkd", "logit_std", "dist_plus", "vid", "ofd",
                                             "reviewkd", "ft", "ab")}
PAGES["fitnet_staged"] = "docs/stages.md"
MATCHED = {"fsp": "docs/losses/fsp.md", "kdsvd": "docs/losses/kdsvd.md"}
HEADING = "## Measured on the protocol's sets"


def _ms(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _paired(method: dict[str, Any], alone: dict[str, Any], key: str, better: int) -> tuple[float, str]:
    delta = better * (method["metrics"][key]["mean"] - alone["metrics"][key]["mean"])
    d = [better * (x[key] - y[key]) for x, y in zip(method["per_seed_test"], alone["per_seed_test"])]
    return delta, f"{sum(v > 0 for v in d)}/{len(d)}"


def _label(page: str, method: str) -> str:
    return "this loss" if page.startswith("docs/losses/") else method


def quality_section(method: str, saved: dict[str, Any], page: str) -> list[str]:
    meta = saved["meta"]
    up = "../" * (page.count("/"))
    lines = [HEADING, "", f"`{meta['command']}` ([quality_baselines.md]({up}benchmarks/results/quality_baselines.md); "
             f"written into this page by `python benchmarks/loss_pages.py`). quality.py's protocol: one teacher per set, "
             f"the protocol's student, seeds {meta['seeds']}, test metric of the best-on-validation epoch, mean ± sample "
             "std; Δ vs the student alone with + better (on RMSE: lower); *won* = seeds ahead of the student alone, "
             "paired. On a regression set the task term is MSE and a KD term is MSE to the teacher (quality.py's "
             f"regression forms). Measured on {meta['date']}, {meta['cpus']} CPUs.", "",
             f"| set | metric | teacher | student alone | KD (quickstart recipe) | {_label(page, method)} | Δ vs alone | won |",
             "|---|---|---|---|---|---|---|---|"]
    skipped = []
    for d in saved["results"]:
        key, better = ("acc", 1) if d["task"] == "classification" else ("rmse", -1)
        if method not in d["methods"]:
            if method in d["skipped"]:
                skipped.append(f"{d['dataset']} ({d['skipped'][method]})")
            continue
        m = d["methods"][method]
        kd = d["methods"].get("kd")
        delta, won = _paired(m["method"], m["alone"], key, better)
        teacher = m["teacher"] or (kd or {}).get("teacher")
        lines.append(f"| {d['dataset']} | test {key} | {teacher['metrics'][key]['mean']:.3f} | "
                     f"{_ms(m['alone']['metrics'][key])} | {_ms(kd['method']['metrics'][key]) if kd else '—'} | "
                     f"{_ms(m['method']['metrics'][key])} | {delta:+.3f} | {won} |")
    if skipped:
        lines += ["", "Not run on: " + "; ".join(skipped) + "."]
    return lines


def matched_section(method: str, saved: dict[str, Any], page: str) -> list[str]:
    meta = saved["meta"]
    up = "../" * (page.count("/"))
    lines = [HEADING, "", f"`{meta['command']}` ([matched_channels.md]({up}benchmarks/results/matched_channels.md); "
             "written into this page by `python benchmarks/loss_pages.py`). quality.py's protocol (data, student, "
             f"budget, seeds {meta['seeds']}, best-on-validation epoch, mean ± sample std) with a teacher whose channels "
             "match the student's at each tap: the FCN at width 1/8 (16-32-16 channels), as in this loss's recipe; the "
             "protocol's 128-channel teacher cannot be compared channel by channel, so quality.py skips this loss. "
             "KD is from the same small teacher. Δ vs the student alone with + better; *won* = seeds ahead of the "
             f"student alone, paired. Measured on {meta['date']}, {meta['cpus']} CPUs.", "",
             f"| set | metric | teacher (FCN w 1/8) | student alone | KD (same teacher) | {_label(page, method)} | Δ vs alone | won |",
             "|---|---|---|---|---|---|---|---|"]
    for d in saved["results"]:
        key, better = ("acc", 1) if d["task"] == "classification" else ("rmse", -1)
        m, kd = d["arms"][method], d["arms"]["kd"]
        if "failed" in m or "failed" in kd:
            lines.append(f"| {d['dataset']} | test {key} | | | | failed: {m.get('failed') or kd.get('failed')} | | |")
            continue
        delta, won = _paired(m["method"], m["alone"], key, better)
        lines.append(f"| {d['dataset']} | test {key} | {m['teacher']['metrics'][key]['mean']:.3f} | "
                     f"{_ms(m['alone']['metrics'][key])} | {_ms(kd['method']['metrics'][key])} | "
                     f"{_ms(m['method']['metrics'][key])} | {delta:+.3f} | {won} |")
    return lines


def rewrite(page: Path, section: list[str]) -> None:
    """Replace the page's section headed ``section[0]`` (from that heading to the next ``## `` or the end) or append
    it at the end."""
    text = page.read_text()
    found = re.search("^" + re.escape(section[0]) + r"\n", text, flags=re.M)
    if found is None:
        head, tail = text.rstrip("\n") + "\n\n", ""
    else:
        head = text[:found.start()]
        after = re.search(r"^## ", text[found.end():], flags=re.M)
        tail = "" if after is None else "\n" + text[found.end() + after.start():]
    write_text(page, head + "\n".join(section) + "\n" + tail)


def main() -> None:
    for name, pages, section in (("quality_baselines", PAGES, quality_section),
                                 ("matched_channels", MATCHED, matched_section)):
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            print(f"skip {name}: {path.relative_to(ROOT)} not found (run its benchmark first)")
            continue
        saved = read_json(path)
        for method, page in pages.items():
            rewrite(ROOT / page, section(method, saved, page))
            print(f"wrote {page}")


if __name__ == "__main__":
    main()
