"""UCR/UEA loader on tiny .ts files in the archive's format (header tags, ':' between channels, label last)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives.ucr_uea import ARCHIVE, load, problem_folder
from edgedistill.errors import UserInputError

HEADER = """#A comment line as the archive's files start with.
@problemName {name}
@timeStamps false
@missing {missing}
@univariate false
@dimensions 2
@equalLength {equal}
@seriesLength 4
@classLabel true Standing Running
@data
"""


def _case(ch0: list, ch1: list, label: str) -> str:
    return ",".join(map(str, ch0)) + ":" + ",".join(map(str, ch1)) + ":" + label


def write_problem(root: Path, name: str = "Tiny", release: str = "Multivariate_ts", train_lines=None,
                  test_lines=None, missing: str = "false", equal: str = "true") -> Path:
    folder = root / release / name
    folder.mkdir(parents=True, exist_ok=True)
    train_lines = train_lines or [
        _case([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], "Standing"),
        _case([4.0, 3.0, 2.0, 1.0], [1.5, 2.5, 3.5, 4.5], "Running"),
        _case([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0], "Running"),
    ]
    test_lines = test_lines or [_case([9.0, 8.0, 7.0, 6.0], [1.0, 1.0, 1.0, 1.0], "Standing")]
    head = HEADER.format(name=name, missing=missing, equal=equal)
    (folder / f"{name}_TRAIN.ts").write_text(head + "\n".join(train_lines) + "\n")
    (folder / f"{name}_TEST.ts").write_text(head + "\n".join(test_lines) + "\n")
    return root / release


def test_reads_the_official_split_shapes_labels_and_values(tmp_path):
    raw = load(write_problem(tmp_path), dataset="Tiny")
    assert raw.x.shape == (3, 2, 4) and raw.test_x.shape == (1, 2, 4)
    np.testing.assert_array_equal(raw.x[1, 1], [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(raw.test_x[0, 0], [9.0, 8.0, 7.0, 6.0])
    assert list(raw.y) == ["standing", "running", "running"] and list(raw.test_y) == ["standing"]
    assert raw.classes == ["standing", "running"]  # the header's order, lower-cased by aeon's reader
    assert raw.channels == ["dim_0", "dim_1"] and raw.name == "Tiny" and raw.group is None


def test_a_problem_in_the_univariate_release_beside_the_archive_folder_is_found(tmp_path):
    write_problem(tmp_path, name="Uni", release="Univariate_ts")
    raw = load(tmp_path / "Multivariate_ts", dataset="Uni")
    assert raw.x.shape == (3, 2, 4)


def test_one_problems_zip_unpacked_into_the_root_is_found_even_without_the_release_folder(tmp_path):
    folder = write_problem(tmp_path, name="Solo", release=".")
    assert load(tmp_path / "Multivariate_ts", dataset="Solo").x.shape == (3, 2, 4)
    assert problem_folder(tmp_path / "Multivariate_ts", "Solo") == folder / "Solo"


def test_missing_values_are_interpolated_and_noted(tmp_path):
    lines = [_case([1.0, "?", 3.0, 4.0], [0.5, 0.5, "NaN", 0.5], "Standing"),
             _case([4.0, 3.0, 2.0, 1.0], [1.5, 2.5, 3.5, 4.5], "Running")]
    raw = load(write_problem(tmp_path, train_lines=lines, missing="true"), dataset="Tiny")
    np.testing.assert_allclose(raw.x[0, 0], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(raw.x[0, 1], [0.5, 0.5, 0.5, 0.5])
    assert any("2 missing value(s)" in n for n in raw.notes)


@pytest.mark.parametrize("bad", ["../Tiny", "a/b", "..", "", "Tiny\n", 3])
def test_unsafe_or_non_string_names_are_refused(tmp_path, bad):
    with pytest.raises(UserInputError, match="data.params.dataset"):
        load(write_problem(tmp_path), dataset=bad)


def test_an_absent_problem_names_the_places_looked(tmp_path):
    with pytest.raises(UserInputError, match="Nope_TRAIN.ts"):
        load(write_problem(tmp_path), dataset="Nope")


def test_unequal_length_is_refused_with_a_clear_message(tmp_path):
    lines = [_case([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "Standing"), _case([1.0, 2.0], [1.0, 2.0], "Running")]
    with pytest.raises(UserInputError, match="unequal length"):
        load(write_problem(tmp_path, train_lines=lines, equal="false"), dataset="Tiny")


def test_a_corrupt_or_missing_file_is_named(tmp_path):
    folder = write_problem(tmp_path)
    (folder / "Tiny" / "Tiny_TEST.ts").write_text("@problemName Tiny\n@data extra\n1,2:3,4:Standing\n")
    with pytest.raises(UserInputError, match="Tiny_TEST.ts"):
        load(folder, dataset="Tiny")
    (folder / "Tiny" / "Tiny_TEST.ts").unlink()
    with pytest.raises(UserInputError, match="Tiny_TEST.ts"):
        load(folder, dataset="Tiny")


def test_a_label_outside_the_header_list_is_refused(tmp_path):
    lines = [_case([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "Jumping")]
    with pytest.raises(UserInputError, match="jumping"):
        load(write_problem(tmp_path, test_lines=lines), dataset="Tiny")


def test_archive_entry():
    assert ARCHIVE.name == "ucr_uea" and ARCHIVE.kind == "1d" and ARCHIVE.load is load and ARCHIVE.url is None


@pytest.mark.parametrize("problem", ["BasicMotions", "ArrowHead"])
def test_the_archives_own_files_as_aeon_ships_them_read_like_aeon_reads_them(problem):
    """aeon's wheel carries a few problems' real .ts files in the archive's layout (<Name>/<Name>_TRAIN.ts)."""
    import aeon.datasets
    from aeon.datasets import load_classification

    raw = load(Path(aeon.datasets.__file__).parent / "data", dataset=problem)
    for split, x, y in (("train", raw.x, raw.y), ("test", raw.test_x, raw.test_y)):
        ax, ay = load_classification(problem, split=split)
        np.testing.assert_array_equal(x, ax)
        np.testing.assert_array_equal(y, ay)


def test_an_unequal_length_problem_from_the_archive_is_refused():
    import aeon.datasets

    with pytest.raises(UserInputError, match="unequal length"):
        load(Path(aeon.datasets.__file__).parent / "data", dataset="JapaneseVowels")
