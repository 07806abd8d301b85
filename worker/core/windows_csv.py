"""The one reader of ECG window CSV files: ``ecg-score``, ``ecg-replay``, the trainer's data
loader and the demo's offline check all parse rows here, so they accept the same files and
word the same problem the same way.

One window per line, ``window_length`` numbers, with a label in one of three layouts:

- ``LABEL_OPTIONAL``: an optional trailing 0/1 label (1 = normal); the first data row decides
  whether the file is labelled (``ecg-score``, ``ecg-replay``);
- ``LABEL_LAST``: a required trailing label (the tutorial's ``ecg.csv``);
- ``LABEL_FIRST``: a required leading class (the UCR archive's ``ECG5000_*.tsv``).

Blank lines are skipped; row numbers are 1-based line numbers. Every other line yields a
``CsvWindow`` or a ``CsvRejected`` with a reason code (the worker's codes, plus
``bad_label``); callers decide whether a rejected row stops them.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.core.codec import NON_FINITE, NON_NUMERIC, WRONG_LENGTH
from worker.core.errors import DataError

LABEL_OPTIONAL = "optional"
LABEL_LAST = "last"
LABEL_FIRST = "first"
LABEL_LAYOUTS = (LABEL_OPTIONAL, LABEL_LAST, LABEL_FIRST)
BAD_LABEL = "bad_label"
BINARY_LABELS = (0, 1)


@dataclass(frozen=True)
class CsvWindow:
    """A parsed row: ``row`` is its 1-based line number in the file."""

    row: int
    values: list[float]
    label: int | None


@dataclass(frozen=True)
class CsvRejected:
    """A row that cannot be used, with a reason code and a sentence naming the column."""

    row: int
    reason: str  # wrong_length | non_numeric | non_finite | bad_label
    detail: str  # starts with "column N: " when one column is at fault
    column: int | None = None

    def message(self, source: str | os.PathLike[str]) -> str:
        """The one-line error naming the file, line and, where it applies, the column."""
        separator = ", " if self.column is not None else ": "
        return f"{source}: line {self.row}{separator}{self.detail}"


def read_windows(
    lines: Iterable[str],
    window_length: int,
    *,
    label: str = LABEL_OPTIONAL,
    labels: Collection[int] = BINARY_LABELS,
    delimiter: str = ",",
) -> Iterator[CsvWindow | CsvRejected]:
    """Parse CSV text; every non-blank line yields a window or a rejection.

    ``labels`` are the accepted label values (ECG5000's classes are 1..5).
    """
    if label not in LABEL_LAYOUTS:
        raise ValueError(f"label layout must be one of {LABEL_LAYOUTS}, got {label!r}")
    labelled: bool | None = None if label == LABEL_OPTIONAL else True
    for row, fields in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        if not fields or not any(f.strip() for f in fields):
            continue
        if labelled is None and len(fields) in (window_length, window_length + 1):
            labelled = len(fields) == window_length + 1
        expected = window_length + 1 if labelled else window_length
        if len(fields) != expected:
            yield CsvRejected(
                row,
                WRONG_LENGTH,
                f"{len(fields)} columns, expected {expected} "
                f"({_layout(label, labelled, window_length, labels)})",
            )
            continue
        yield _parse_row(row, fields, label if labelled else None, labels)


def read_windows_file(
    path: str | os.PathLike[str],
    window_length: int,
    *,
    label: str = LABEL_OPTIONAL,
    labels: Collection[int] = BINARY_LABELS,
    delimiter: str = ",",
) -> list[CsvWindow | CsvRejected]:
    """``read_windows`` of a file; an unreadable or missing file is a ``DataError``."""
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "file does not exist"
        raise DataError(f"{path}: {problem}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(
                read_windows(f, window_length, label=label, labels=labels, delimiter=delimiter)
            )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def _parse_row(
    row: int, fields: list[str], label: str | None, labels: Collection[int]
) -> CsvWindow | CsvRejected:
    values = []
    for column, text in enumerate(fields, start=1):
        try:
            value = float(text)
        except ValueError:
            return CsvRejected(
                row, NON_NUMERIC, f"column {column}: {text.strip()!r} is not a number", column
            )
        if not math.isfinite(value):
            return CsvRejected(
                row, NON_FINITE, f"column {column}: {text.strip()} is not finite", column
            )
        values.append(value)
    if label is None:
        return CsvWindow(row, values, None)
    index = 0 if label == LABEL_FIRST else len(values) - 1
    raw = values.pop(index)
    if raw not in labels:
        return CsvRejected(
            row,
            BAD_LABEL,
            f"column {index + 1}: label {fields[index].strip()!r} is not {_one_of(labels)}",
            index + 1,
        )
    return CsvWindow(row, values, int(raw))


def _layout(label: str, labelled: bool | None, window_length: int, labels: Collection[int]) -> str:
    if label == LABEL_FIRST:
        return f"the class ({_one_of(labels)}), then {window_length} values"
    if label == LABEL_LAST:
        return f"{window_length} values, then the {_one_of(labels, '/')} label"
    if labelled is None:
        return f"{window_length} values, optionally followed by a 0/1 label"
    if labelled:
        return f"{window_length} values and a 0/1 label, like the first row"
    return f"{window_length} values and no label, like the first row"


def _one_of(labels: Collection[int], joiner: str = " or ") -> str:
    names = [str(v) for v in sorted(labels)]
    if joiner != " or ":
        return joiner.join(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
