"""The size budget's "within budget" verdicts are kept in the cache folder, so a later process skips the meta-device
forward pass (which imports torch's symbolic-shape machinery, ~1.5 s per process); a refusal is never kept, and a
damaged file is measured again."""
import json
import os
import subprocess
import sys

BUILD = ("from edgedistill.models import build_model; from edgedistill.errors import UserInputError\n"
         "build_model('cnn1d', 3, 4, (64,), key='student', width=8, depth=2)\n"
         "try:\n    build_model('cnn1d', 3, 4, (64,), key='student', width=200000, depth=2)\n"
         "except UserInputError as e:\n    print('refused')\n")


def _run(cache) -> list[str]:
    cache.mkdir(exist_ok=True)
    env = {**os.environ, "EDGEDISTILL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_a_verdict_is_kept_for_the_next_process_and_a_refusal_is_not(tmp_path):
    first = _run(tmp_path)
    kept = json.loads((tmp_path / "within_budget.json").read_text())
    assert first[0] == "refused" and len(kept) == 1 and "'cnn1d'" in kept[0] and "width', 8" in kept[0]
    assert _run(tmp_path)[0] == "refused"  # measured, and refused, again in the next process


def test_the_next_process_skips_the_meta_forward_and_a_damaged_file_is_measured_again(tmp_path):
    code = ("import sys; from edgedistill.models import build_model\n"
            "build_model('cnn1d', 3, 4, (64,), key='student', width=8, depth=2); print('sympy' in sys.modules)")
    env = {**os.environ, "EDGEDISTILL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    run = lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,  # noqa: E731
                                 check=True).stdout.split()[-1]
    assert [run(), run()] == ["True", "True"] and not (tmp_path / "cache").exists()  # never creates the folder
    (tmp_path / "cache").mkdir()
    assert [run(), run()] == ["True", "False"]
    (tmp_path / "cache" / "within_budget.json").write_text("{not json")
    assert run() == "True" and json.loads((tmp_path / "cache" / "within_budget.json").read_text())
