"""The download script's handling of the bundled demo weights (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.model.variants import get_variant
from pipelines.weights import bundled_weights
from scripts import download_model


def test_demo_with_an_output_dir_copies_the_bundled_file_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundled = bundled_weights(get_variant("demo"))
    assert bundled is not None
    output_dir = tmp_path / "weights"
    assert download_model.main(["--model", "demo", "--output-dir", str(output_dir)]) == 0
    copied = output_dir / bundled.name
    assert copied.read_bytes() == bundled.read_bytes()
    assert capsys.readouterr().out.splitlines()[-1] == f"weights: {copied}"


def test_demo_into_its_own_folder_leaves_the_bundled_file_intact(capsys: pytest.CaptureFixture[str]) -> None:
    bundled = bundled_weights(get_variant("demo"))
    assert bundled is not None
    before = bundled.stat().st_size
    assert download_model.main(["--model", "demo", "--output-dir", str(bundled.parent)]) == 0
    assert bundled.stat().st_size == before
    assert capsys.readouterr().out.splitlines()[-1] == f"weights: {bundled}"


def test_demo_without_an_output_dir_reports_the_bundled_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert download_model.main(["--model", "demo"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"already present: {bundled_weights(get_variant('demo'))}"
