"""scripts/eval_foreground.py judges refinement on generated scenes and prints one summary line."""

import re

import pytest

from scripts.eval_foreground import main


def test_refinement_lowers_the_fringe_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "4", "--size", "160", "224"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"scenes=4 unrefined=([\d.]+) refined=([\d.]+) ratio=([\d.]+) refine_ms=[\d.]+", line
    )
    assert found, line
    assert float(found.group(2)) < float(found.group(1))


def test_a_count_below_one_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--count", "0"])
    assert caught.value.code == 2
