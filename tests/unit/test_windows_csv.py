"""The one ECG window CSV reader: its three label layouts and its one wording of problems."""

from __future__ import annotations

import io

import pytest

from worker.core.windows_csv import (
    LABEL_FIRST,
    LABEL_LAST,
    CsvRejected,
    CsvWindow,
    read_windows,
)

N = 4


def rows(*lines: str, **layout) -> list[CsvWindow | CsvRejected]:
    return list(read_windows(io.StringIO("\n".join(lines)), N, **layout))


def test_optional_label_is_decided_by_the_first_row() -> None:
    assert rows("1,2,3,4,1", "", "5,6,7,8,0") == [
        CsvWindow(1, [1.0, 2.0, 3.0, 4.0], 1),
        CsvWindow(3, [5.0, 6.0, 7.0, 8.0], 0),
    ]
    (bad,) = rows("1,2,3,4", "1,2,3,4,1")[1:]
    assert isinstance(bad, CsvRejected) and bad.reason == "wrong_length"
    assert bad.message("x.csv") == (
        "x.csv: line 2: 5 columns, expected 4 (4 values and no label, like the first row)"
    )


def test_leading_class_of_the_ucr_files() -> None:
    got = rows(
        "3\t1\t2\t3\t4", "9\t1\t2\t3\t4", label=LABEL_FIRST, labels=range(1, 6), delimiter="\t"
    )
    assert got[0] == CsvWindow(1, [1.0, 2.0, 3.0, 4.0], 3)
    assert isinstance(got[1], CsvRejected)
    assert got[1].message("t.tsv") == "t.tsv: line 2, column 1: label '9' is not 1, 2, 3, 4 or 5"


def test_required_trailing_label_rejects_a_row_without_one() -> None:
    (bad,) = rows("1,2,3,4", label=LABEL_LAST)
    assert isinstance(bad, CsvRejected)
    assert bad.detail == "4 columns, expected 5 (4 values, then the 0/1 label)"


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        ("1,x,3,4", "non_numeric", "f: line 1, column 2: 'x' is not a number"),
        ("1,2,nan,4", "non_finite", "f: line 1, column 3: nan is not finite"),
        ("1,2,3,4,2", "bad_label", "f: line 1, column 5: label '2' is not 0 or 1"),
    ],
)
def test_a_bad_value_names_its_column(line: str, reason: str, message: str) -> None:
    (bad,) = rows(line)
    assert isinstance(bad, CsvRejected)
    assert (bad.reason, bad.message("f")) == (reason, message)
