"""ctadeface.settings: the checks shared by the app and its module commands."""

from __future__ import annotations

import pytest

from ctadeface.errors import UsageError
from ctadeface.settings import check_face_threshold, check_nprocs


@pytest.mark.parametrize("p", [1e-6, 0.5, 1.0])
def test_face_threshold_in_the_half_open_unit_interval(p: float) -> None:
    assert check_face_threshold(p) == p


@pytest.mark.parametrize("p", [0.0, -0.1, 1.01, float("nan")])
def test_face_threshold_outside_is_one_usage_line(p: float) -> None:
    with pytest.raises(UsageError, match=r"--face-threshold must be in \(0, 1\]"):
        check_face_threshold(p)


def test_nprocs_none_or_at_least_one() -> None:
    assert check_nprocs(None) is None and check_nprocs(1) == 1
    with pytest.raises(UsageError, match="--nprocs must be at least 1, got 0"):
        check_nprocs(0)
