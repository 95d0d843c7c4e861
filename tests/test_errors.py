"""ctadeface.errors: each error's BEP027 exit code, and argparse errors as UsageError."""

from __future__ import annotations

import pytest

from ctadeface import errors


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.CTADefaceError, 1),
        (errors.UsageError, 64),
        (errors.ModelError, 64),
        (errors.InputError, 65),
        (errors.NoInputError, 66),
        (errors.OutputError, 73),
    ],
)
def test_each_error_has_its_bids_apps_exit_code(error: type, code: int) -> None:
    assert error("x").exit_code == code


def test_a_bad_argument_raises_usage_error_instead_of_exiting() -> None:
    parser = errors.ArgumentParser(prog="p")
    parser.add_argument("--n", type=int)
    with pytest.raises(
        errors.UsageError, match=r"argument --n: invalid int value: 'x' \(see --help\)"
    ):
        parser.parse_args(["--n", "x"])
