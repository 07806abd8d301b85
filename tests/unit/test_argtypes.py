from __future__ import annotations

import argparse

import pytest

from worker.cli_support.argtypes import non_negative_float, positive_float, positive_int


def test_accepted_values() -> None:
    assert positive_int("3") == 3
    assert positive_float("0.5") == 0.5
    assert non_negative_float("0") == 0.0


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "expected a whole number >= 1, got '0'"),
        (positive_int, "-2", "expected a whole number >= 1"),
        (positive_int, "1.5", "expected a whole number >= 1, got '1.5'"),
        (positive_float, "0", "expected a positive number, got '0'"),
        (positive_float, "nan", "expected a positive number"),
        (positive_float, "inf", "expected a positive number"),
        (positive_float, "fast", "expected a positive number, got 'fast'"),
        (non_negative_float, "-0.1", "expected a finite number >= 0, got '-0.1'"),
        (non_negative_float, "inf", "expected a finite number >= 0"),
    ],
)
def test_rejected_values_say_what_was_expected(parse, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace(".", r"\.")):
        parse(text)
