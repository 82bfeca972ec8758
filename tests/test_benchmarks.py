"""Fast checks of the benchmark protocols (no training): every quality run is a valid recipe that shares the
protocol's teacher, and the speed benchmark's torchdistill arm computes the same loss as ours."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from edgedistill.config import load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import quality  # noqa: E402
import quality_protocol as protocol  # noqa: E402
import speed  # noqa: E402


@pytest.mark.parametrize("dataset", list(protocol.PROTOCOL))
def test_every_applicable_run_is_a_valid_recipe_with_the_protocol_student(dataset: str) -> None:
    for method in protocol.METHODS:
        if protocol.skip_reason(method, has_groups=False, dataset=dataset):
            continue
        r = protocol.recipe(dataset, method, [0, 1], div=5)
        recipe = load_recipe(r)  # schema-checked: misspelt keys or bad values fail here
        assert recipe.student.model == protocol.PROTOCOL[dataset]["student"]["model"]
        assert recipe.train.epochs == max(2, protocol.PROTOCOL[dataset]["train"]["epochs"] // 5)
        assert recipe.data.name == dataset and recipe.seeds == [0, 1]


def test_every_registered_method_is_benchmarked_or_excluded_with_a_reason() -> None:
    from edgedistill.registry import METHODS

    covered = {protocol._shipped(recipe)["method"]["name"] for recipe in protocol.METHODS.values()}
    covered |= {protocol._shipped(recipe)["method"]["name"] for recipe in protocol.REGRESSION_VARIANT.values()}
    # The package's methods (test modules register their own helpers in the same registry).
    registered = {n for n in METHODS.names() if METHODS.entry(n).obj.__module__.startswith("edgedistill.")}
    assert registered - covered == set(protocol.NOT_BENCHMARKED), "a registered method is neither run nor excluded"
    assert all(reason for reason in protocol.NOT_BENCHMARKED.values())


def test_costly_regimes_run_on_named_protocol_sets_and_say_why_elsewhere() -> None:
    for method, (sets, why) in protocol.COSTLY.items():
        assert method in protocol.METHODS and sets <= set(protocol.PROTOCOL) and why
        for dataset in protocol.PROTOCOL:
            reason = protocol.skip_reason(method, has_groups=True, dataset=dataset)
            assert (reason is None) == (dataset in sets)
            assert reason is None or reason.startswith("cost:")


def test_topo_kd_run_adds_pis_and_keeps_the_protocol_teacher_on_the_raw_signal() -> None:
    r = protocol.recipe("basicmotions", "topo_kd", [0])
    kd = protocol.recipe("basicmotions", "kd", [0])
    assert r["data"]["topology"]["workers"] == 1 and r["data"]["name"] == "basicmotions"
    raw, pi = r["teachers"]
    assert {k: v for k, v in raw.items() if k not in ("name", "view")} == kd["teacher"] and raw["view"] == "x"
    assert pi["view"] == "pi" and pi["model"] == "cnn2d" and pi["train"] == kd["teacher"]["train"]
    assert "images" in protocol.skip_reason("topo_kd", has_groups=False, dataset="digits")
    assert load_recipe(r).student.model == "cnn1d"


def _teacher_key(t: dict) -> dict:
    return {k: v for k, v in t.items() if k != "name"}


@pytest.mark.parametrize("method", ["multi_teacher", "camkd", "takd", "ta_ensemble", "ceskd"])
def test_multi_teacher_runs_reuse_the_single_teacher_checkpoint(method: str) -> None:
    # The model cache keys a teacher by data, model, training config and seed (not by name): the first
    # teacher of these regimes must be specified exactly like plain KD's teacher to be the same checkpoint.
    kd = protocol.recipe("osuleaf", "kd", [0])
    other = protocol.recipe("osuleaf", method, [0])
    first = _teacher_key(other["teachers"][0])
    first.setdefault("seed", 0)
    assert first == {**kd["teacher"], "seed": 0}


def test_assistants_are_wider_copies_of_the_protocol_student() -> None:
    r = protocol.recipe("digits", "ta_ensemble", [0])
    widths = [t["width"] for t in r["teachers"] if t.get("distill_from")]
    assert [t["model"] for t in r["teachers"] if t.get("distill_from")] == ["cnn2d"] * 3
    assert widths == [24, 16, 32]  # 3x, 2x, 4x the student's 8, as the shipped recipe's 48/32/64 are of 16


def test_regression_uses_the_regression_kd_terms_and_skip_rules_say_why() -> None:
    r = protocol.recipe("tecator", "kd", [0])
    assert [t["loss"] for t in r["method"]["terms"]] == ["mse", "mse_to_teacher"]
    assert "cross-view" in protocol.skip_reason("pskd", has_groups=True)
    assert protocol.skip_reason("tasked", has_groups=True) is None
    assert "subject" in protocol.skip_reason("tasked", has_groups=False)
    assert protocol.skip_reason("kd", has_groups=False) is None


def test_gap_closed_is_undefined_within_the_students_noise() -> None:
    assert quality.gap(0.9, 0.8, 1.0, noise=0.01) == pytest.approx(0.5)
    assert quality.gap(0.9, 0.8, 0.805, noise=0.01) is None


def test_growth_exponent() -> None:
    assert speed.slope([1000, 4000, 16000], [1.0, 4.0, 16.0]) == pytest.approx(1.0)
    assert speed.slope([1000, 4000, 16000], [1.0, 2.0, 4.0]) == pytest.approx(0.5)


@pytest.mark.skipif(importlib.util.find_spec("torchdistill") is None, reason="torchdistill not installed")
def test_torchdistill_arm_computes_our_kd_loss() -> None:
    splits = speed.head(speed.make_data(128), 128)
    assert speed.same_loss(splits.info, splits, speed.torchdistill_parts()) < 1e-5


def test_on_a_regression_set_the_task_and_kd_terms_take_their_regression_forms() -> None:
    r = protocol.recipe("tecator", "cc", [0])  # recipes/cc.yaml: CE + KD (T 4) + CC
    losses = [t["loss"] for t in r["method"]["terms"]]
    assert losses[:2] == ["mse", "mse_to_teacher"] and "cc" in losses
    assert all("temperature" not in t for t in r["method"]["terms"] if t["loss"] == "mse_to_teacher")
    staged = protocol.recipe("tecator", "fitnet_staged", [0])
    assert [t["loss"] for t in staged["method"]["stages"][1]["terms"]] == ["mse", "mse_to_teacher"]
    assert protocol.recipe("gunpoint", "cc", [0])["method"]["terms"][0]["loss"] == "ce"  # classification untouched


def test_the_loss_pages_show_the_saved_benchmark_numbers() -> None:
    """benchmarks/loss_pages.py writes each page's measured section from the results files: a page edited by hand, or
    results re-measured without rewriting the pages, fails here."""
    import loss_pages
    from edgedistill.io import read_json

    checked = 0
    for name, pages, section in (("quality_baselines", loss_pages.PAGES, loss_pages.quality_section),
                                 ("matched_channels", loss_pages.MATCHED, loss_pages.matched_section)):
        path = loss_pages.RESULTS / f"{name}.json"
        if not path.is_file():
            continue
        saved = read_json(path)
        for method, page in pages.items():
            text = (loss_pages.ROOT / page).read_text()
            assert "\n".join(section(method, saved, page)) in text, f"{page}: run python benchmarks/loss_pages.py"
            checked += 1
    assert checked >= len(loss_pages.PAGES)


def test_the_seed_method_pages_show_the_saved_protocol_numbers() -> None:
    """benchmarks/fidelity_pages.py writes each seed method's protocol-budget table from seed_fidelity_*_protocol.json;
    a page edited by hand, or re-measured results not written into the pages, fails here."""
    import fidelity_pages
    from edgedistill.io import read_json

    for script, items in fidelity_pages.PAGES.items():
        path = fidelity_pages.RESULTS / f"{script}_protocol.json"
        if not path.is_file():
            continue
        saved = read_json(path)
        for page in set(items.values()):
            mine = [i for i, p in items.items() if p == page]
            if not any(r["item"] in mine for r in saved["rows"]):
                continue
            expected = fidelity_pages.section(script, saved, mine)
            assert "\n".join(expected) in (fidelity_pages.ROOT / page).read_text(), \
                f"{page}: run python benchmarks/fidelity_pages.py"


def test_parallel_seeds_reads_the_epochs_of_every_stage_and_bounds_the_speed_up(tmp_path) -> None:
    import json

    import parallel_seeds

    def log(folder):
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "time_s": 0.5}) + "\n" for e in (1, 2)))

    run, cache, warm = tmp_path / "run", tmp_path / "cache", tmp_path / "warm"
    log(run / "offline" / "seed0")
    log(run / "offline" / "seed1")
    (run / "teacher").mkdir(parents=True)  # read from the cache: no epochs of its own
    log(cache / "models" / "teacherkey")  # the teacher's entry, found in the warm cache: not this arm's training
    log(cache / "models" / "alonekey")  # a student alone, trained into the cache by the arm
    (warm / "models" / "teacherkey").mkdir(parents=True)
    logs = parallel_seeds.stage_logs(run, cache, warm)
    assert [p.parent.name for p in logs] == ["seed0", "seed1", "alonekey"]
    assert parallel_seeds.epoch_seconds(logs) == pytest.approx(3.0)
    # 40 s, of which 10 s outside the stages; the epochs take 1.3x longer at 1 thread: 10 + 30 * 1.3 / 2 = 29.5 s
    assert parallel_seeds.ceiling(40.0, 10.0, 20.0, 26.0, 2) == pytest.approx(40.0 / 29.5)
    assert parallel_seeds.ceiling(40.0, 0.0, 20.0, 20.0, 2) == pytest.approx(2.0)  # all stages, no thread gain: N x
