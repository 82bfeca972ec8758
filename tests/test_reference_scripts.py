"""The numpy reference scripts under tests/reference/ still print the outputs committed beside them.

The golden values the loss and method tests embed were copied from those outputs; a script edited so that it prints
something else would leave the tests checking numbers nobody can regenerate. Numbers are compared with a relative
tolerance of 1e-9 (full-precision lines differ in the last digit between machines), everything else exactly.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent / "reference"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# ref_persistence_image.py's last lines depend on optional packages (ripser, persim): its own README says so.
SCRIPTS = sorted(p for p in REFERENCE.glob("ref_*.py") if p.name != "ref_persistence_image.py")


def _split(text: str) -> tuple[list[str], list[float]]:
    return NUMBER.sub("#", text).split(), [float(x) for x in NUMBER.findall(text)]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_reference_script_prints_its_committed_output(script: Path) -> None:
    expected = script.with_name(script.stem + "_output.txt")
    assert expected.is_file(), f"{script.name} has no committed output {expected.name}"
    got = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REFERENCE)
    assert got.returncode == 0, got.stderr[-2000:]
    words, numbers = _split(got.stdout)
    want_words, want_numbers = _split(expected.read_text())
    assert words == want_words, f"{script.name}: the printed text differs from {expected.name}"
    assert numbers == pytest.approx(want_numbers, rel=1e-9, abs=1e-12), f"{script.name}: a printed value changed"


def test_the_reference_scripts_are_independent_of_the_package() -> None:
    for script in REFERENCE.glob("*.py"):
        text = script.read_text()
        assert not re.search(r"^\s*(?:import|from)\s+(?:edgedistill|torch)\b", text, re.M), \
            f"{script.name} imports the package or torch: a golden value must come from a separate implementation"
