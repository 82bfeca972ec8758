"""Docs and docstrings cite papers, official code and paths inside this repository only.

A reader who installs edgedistill has the repository and nothing else: a pointer to a file on one machine, to
notes kept beside the repository (spec folders, fact sheets, design notes; the patterns are below, the test cases
at the end show examples) or a relative link to a page that does not exist is a dead end for them. This scans the
README, ``docs/**/*.md``, ``examples/``, ``recipes/`` (YAML comments included), the docstrings and comments of
``src/edgedistill/**/*.py``, ``benchmarks/``, ``scripts/`` and ``tests/**/*.py`` (not their code: strings that code
uses are checked by the code's own tests; this file's test cases are such strings), and every line of the other
files of ``tests/reference/`` (the reference scripts' README and committed outputs).
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (a) an absolute path of one machine: a POSIX home/work/system folder or a Windows drive. /tmp is not flagged:
# on any machine it is a fine sample output folder (`--out /tmp/kd`).
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:work|home|root|opt|mnt|Users|srv|scratch)/|(?<![\w])[A-Z]:\\")
# (b) files or notes that live outside the repository (spec folders, fact sheets, design notes), the reference
# scripts named by any path but their own (tests/reference/), and bare section numbers (a section sign and a
# number), which pointed into those notes: cite a paper's section with the paper named.
OUTSIDE = re.compile(r"\bshared/|\.\./shared\b|\bFACTS\b|\bDESIGN\.md\b|(?<![\w/.-])seeds/|\basu-group\.md\b"
                     r"|\bothers\.md\b|(?<!tests/)\breference/ref_|§\s?\d|\bspec \d")
# A reference script or its output named by file name alone (`ref_others.py`, ref_asu_output.txt): it must be one of
# tests/reference/.
REF_FILE = re.compile(r"\bref_\w+\.(?:py|txt)\b")
REFERENCE = ROOT / "tests" / "reference"
# (c) a relative markdown link: [text](target), target without a scheme or a leading '#'.
MD_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
# A repository path written in prose (`docs/<page>.md`, benchmarks/results/y.json): it must exist. A pattern
# (tests/test_plots*.py, tests/test_archive_<name>.py) must match at least one file.
REPO_PATH = re.compile(r"(?<![\w/.~-])((?:docs|src|tests|benchmarks|recipes|scripts|examples)/"
                       r"(?:[\w./*-]|<[\w.-]+>)*(?:[\w/*]|<[\w.-]+>))")

# Legitimate matches, each with its reason: (file relative to the root, text on the line).
ALLOWED: list[tuple[str, str, str]] = [
    # (file, substring of the line, why it is fine)
]
# Repository-path tokens that name something a user creates, not a file of this repository.
GENERATED = re.compile(r"^(?:benchmarks/results/|docs/\w+\.md#)")


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted(p for p in (ROOT / "examples").rglob("*") if p.is_file() and p.suffix in {".md", ".yaml"})
    # The shipped recipes (src/edgedistill/recipes, with recipes/ as a link to them, or a plain folder).
    seen = set()
    for folder in (ROOT / "src" / "edgedistill" / "recipes", ROOT / "recipes"):
        for p in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                files.append(p)
    return files


def _py_files() -> list[Path]:
    """Python a reader reads: the package, the benchmarks, the scripts and the examples."""
    return sorted(p for d in ("src/edgedistill", "benchmarks", "scripts", "examples") for p in (ROOT / d).rglob("*.py"))


def _test_files() -> list[Path]:
    """The tests (their docstrings and comments, the reference scripts' included) and every other file of
    tests/reference/ (its README and the scripts' committed outputs, read line by line)."""
    py = sorted((ROOT / "tests").rglob("*.py"))
    other = sorted(p for p in REFERENCE.glob("*") if p.is_file() and p.suffix in {".md", ".txt"})
    return [p for p in py + other if "__pycache__" not in p.parts]


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of what a reader reads: every line of a page or recipe, only comments and docstrings
    of Python source."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), 1)
        return
    prev = tokenize.INDENT
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        is_doc = tok.type == tokenize.STRING and prev in (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT,
                                                         tokenize.NL, tokenize.ENCODING)
        if tok.type == tokenize.COMMENT or is_doc:
            for k, line in enumerate(tok.string.splitlines()):
                yield tok.start[0] + k, line
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            prev = tok.type


def _allowed(rel: str, line: str) -> bool:
    return any(rel == f and s in line for f, s, _ in ALLOWED)


def _repo_path_exists(token: str, where: Path) -> bool:
    token = token.split("#")[0].rstrip(".")
    if "*" in token or "<" in token:
        pattern = re.sub(r"<[^>]*>", "*", token).rstrip("/")
        return any(any(base.glob(pattern)) for base in (ROOT, where.parent))
    return any(p.exists() for p in (ROOT / token, where.parent / token))


def problems(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        fenced = False
        for n, line in _text_lines(path):
            if _allowed(rel, line):
                continue
            for rx, what in ((MACHINE_PATH, "an absolute machine path"), (OUTSIDE, "a file outside the repository")):
                m = rx.search(line)
                if m:
                    out.append(f"{rel}:{n}: {what} ({m.group(0)!r}): {line.strip()[:120]}")
            if line.lstrip().startswith("```"):
                fenced = not fenced
            if path.suffix == ".md" and not fenced:  # (code in a fenced block is not a link)
                for target in MD_LINK.findall(line):
                    if re.match(r"^(?:[a-z]+:|#|mailto:)", target):
                        continue
                    if not (path.parent / target.split("#")[0]).exists():
                        out.append(f"{rel}:{n}: a link to a missing file ({target}): {line.strip()[:120]}")
            for name in REF_FILE.findall(line):
                if not (REFERENCE / name).is_file():
                    out.append(f"{rel}:{n}: a reference file not in tests/reference ({name}): {line.strip()[:120]}")
            for token in REPO_PATH.findall(line):
                if not GENERATED.match(token) and not _repo_path_exists(token, path):
                    out.append(f"{rel}:{n}: a repository path that does not exist ({token}): {line.strip()[:120]}")
    return out


def test_docs_readme_examples_and_recipes_cite_only_papers_and_repository_paths() -> None:
    found = problems(_doc_files())
    assert not found, "\n".join(found)


def test_docstrings_and_comments_cite_only_papers_and_repository_paths() -> None:
    found = problems(_py_files())
    assert not found, "\n".join(found)


def test_tests_and_reference_scripts_cite_only_papers_and_repository_paths() -> None:
    """The tests say where their golden values come from: a paper, official code or tests/reference/."""
    found = problems(_test_files())
    assert not found, "\n".join(found)


@pytest.mark.parametrize("line, bad", [
    ("see /work/main/runs/x for the numbers", True),
    ("measured in FACTS: 12 s", True),
    ("spec shared/methods/others.md section 7", True),
    ("Spec: `asu-group.md` §2.", True),
    ("as DESIGN.md says", True),
    ("y~ likewise (§4.3)", True),
    ("PI-Net (arXiv 1906.01769; spec 6.2)", True),
    ("the per-seed files are in seeds/quickstart.json", True),
    ("teacher and baseline come from the shared cache, for every seed", False),
    (r"stored in C:\Users\me\runs", True),
    ("[the page](docs/no-such-page.md)", True),
    ("see docs/no-such-page.md", True),
    ("one per archive: tests/test_archive_<name>.py; plots in tests/test_plots*.py", False),
    ("one per archive: tests/test_nothing_<name>.py", True),
    ("<a href=docs/losses/kd.md>KD</a>", False),
    ("Hinton et al., NeurIPS workshop 2015, arXiv 1503.02531; see docs/losses/kd.md", False),
    ("[kd](docs/losses/kd.md), `~/.cache/edgedistill`, https://github.com/a/b/tree/main/x", False),
    ("golden values from ../shared/methods/reference/ref_others_output.txt", True),
    ("ref_others.py section 5, inputs as in reference/ref_asu.py", True),
    ("the value printed by ref_nowhere.py", True),
    ("from tests/reference/ref_others.py section 5 (printed in ref_others_output.txt)", False),
])
def test_the_scanner_catches_what_it_should(tmp_path: Path, line: str, bad: bool, monkeypatch) -> None:
    """The checks above can fail: a page written at the repository root with one such line is flagged."""
    page = ROOT / "README.md"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: line if self == page else "")
    assert bool(problems([page])) == bad, problems([page])
