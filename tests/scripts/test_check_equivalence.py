"""Where the equivalence check looks for the official reference files, and its errors when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import check_equivalence


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository root inside ``tmp_path``, so ``../shared/reference`` stays in the temporary folder."""
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


def test_the_reference_folder_is_the_first_of_shared_parent_shared_and_dot_ref(root: Path) -> None:
    assert check_equivalence.default_reference_dir(root) is None
    (root / ".ref").mkdir()
    assert check_equivalence.default_reference_dir(root) == root / ".ref"
    (root.parent / "shared" / "reference").mkdir(parents=True)
    assert check_equivalence.default_reference_dir(root) == root.parent / "shared" / "reference"
    (root / "shared" / "reference").mkdir(parents=True)
    assert check_equivalence.default_reference_dir(root) == root / "shared" / "reference"


def test_no_reference_folder_is_a_one_line_error_naming_where_it_looked(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_equivalence.main([], root=root) == 2
    captured = capsys.readouterr()
    looked = f"{root / 'shared' / 'reference'}, {root.parent / 'shared' / 'reference'}, {root / '.ref'}"
    assert captured.out == ""
    assert captured.err.splitlines() == [f"error: no reference folder: looked in {looked}; pass --reference-dir"]


def test_a_missing_reference_dir_flag_is_a_one_line_error(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / ".ref").mkdir()  # a default that exists must not hide the explicit choice
    absent = root / "absent"
    assert check_equivalence.main(["--reference-dir", str(absent)], root=root) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: reference folder {absent} does not exist"]


def test_a_reference_folder_without_the_case_files_is_a_one_line_error(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / ".ref").mkdir()
    (root / ".ref" / "general_state_dict_manifest.json").write_text("{}")
    assert check_equivalence.main(["--variant", "general", "--case", "512"], root=root) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {root / '.ref'} lacks general_reference.npz; pass --reference-dir"
    ]
