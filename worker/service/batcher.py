"""Micro-batching: a batch closes at ``max_size`` items, at ``max_bytes`` (when given) or
``max_wait_ms`` after its first item could have arrived.

"Could have arrived": the caller says since when an item may have been waiting (for a
Kafka record, the end of the poll before the one that returned it). A window that arrived
while the previous batch was being scored and published has waited that long already; a
batch opened at the poll that returns it would make it wait ``max_wait_ms`` more, and the
latency of a moderately loaded worker would be ``max_wait_ms`` plus two processing times.

Every item says since when it may have waited, and the batch is due ``max_wait_ms`` after
the earliest of them: an item that waited longer than the batch's first (another partition,
a record fetched late) brings the deadline forward.

``max_wait_ms`` is a budget for the whole stay of a window in the worker, so a batch also
closes early by the time batches take to be scored and published (``published``): its
moving average plus three times its mean deviation, as TCP estimates a retransmission timeout
(RFC 6298), because the windows that wait longest meet the slow batches, not the average
ones. The reserve is at most half of ``max_wait_ms``, so that batches still have time to fill.

Pure: no Kafka, no threads. The clock is injected (seconds, monotonic), so tests drive it
with a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
# Clock readings are floats; tolerate rounding so that "exactly max_wait later" is due.
_EPSILON_S = 1e-9
# Weight of the newest publishing time in the moving average.
PUBLISH_TIME_WEIGHT = 0.2
# Weight of the newest deviation from that average in the mean deviation (RFC 6298's beta).
PUBLISH_DEVIATION_WEIGHT = 0.25
# Mean deviations added to the average publishing time in the reserve. Measured on the
# kafka-python worker at half load, four runs each: p99 51-77 ms with 2, 50-52 ms with 3
# (docs/benchmarks.md, "Latency"). RFC 6298 takes 4 for a timeout that must rarely fire.
RESERVE_DEVIATIONS = 3.0


class Batcher(Generic[T]):
    """Collects items into batches that close on size or on age, whichever comes first."""

    def __init__(
        self,
        max_size: int,
        max_wait_ms: int,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_size = max_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._clock = clock
        self.max_bytes = max_bytes
        self._items: list[T] = []
        self._bytes = 0
        self._opened_at = 0.0
        self._publish_s: float | None = None  # moving average of published() times
        self._publish_deviation_s = 0.0  # their mean deviation from that average

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, nbytes: int = 0, since: float | None = None) -> list[T] | None:
        """Add one item of ``nbytes``, waiting since clock reading ``since`` (default: now);
        return the closed batch when it reached ``max_size`` items or ``max_bytes`` bytes,
        else None. The batch counts as open since the earliest ``since`` of its items."""
        if not self._items:
            now = self._clock()
            self._opened_at = now if since is None else min(since, now)
        elif since is not None and since < self._opened_at:
            self._opened_at = since
        self._items.append(item)
        self._bytes += nbytes
        if len(self._items) >= self.max_size or (
            self.max_bytes is not None and self._bytes >= self.max_bytes
        ):
            return self.take()
        return None

    def published(self, seconds: float) -> None:
        """Report how long the last batch took from closing to being published."""
        if self._publish_s is None:
            self._publish_s = seconds
            self._publish_deviation_s = seconds / 2  # RFC 6298's first measurement
        else:
            deviation = abs(seconds - self._publish_s)
            self._publish_deviation_s += PUBLISH_DEVIATION_WEIGHT * (
                deviation - self._publish_deviation_s
            )
            self._publish_s += PUBLISH_TIME_WEIGHT * (seconds - self._publish_s)

    @property
    def wait_s(self) -> float:
        """How long a batch stays open: ``max_wait_ms`` less the reserve for publishing
        (the average publishing time plus ``RESERVE_DEVIATIONS`` mean deviations, at most
        half of ``max_wait_ms``)."""
        if self._publish_s is None:
            return self.max_wait_s
        expected = self._publish_s + RESERVE_DEVIATIONS * self._publish_deviation_s
        reserve = min(max(expected, 0.0), self.max_wait_s / 2)
        return self.max_wait_s - reserve

    def due(self) -> bool:
        """True when a non-empty batch has been open for ``wait_s``."""
        age = self._clock() - self._opened_at
        return bool(self._items) and age >= self.wait_s - _EPSILON_S

    def time_left_ms(self, idle_ms: int) -> int:
        """How long the caller may block waiting for more input: until the open batch is
        due, or ``idle_ms`` when there is no open batch."""
        if not self._items:
            return idle_ms
        left = self.wait_s - (self._clock() - self._opened_at)
        return max(0, min(idle_ms, int(left * 1000.0 + 0.999)))

    def take(self) -> list[T]:
        """Close and return the open batch (possibly empty)."""
        items, self._items = self._items, []
        self._bytes = 0
        return items

    def discard(self, keep: Callable[[T], bool]) -> list[T]:
        """Drop the items for which ``keep`` is false (e.g. of revoked partitions); return them.

        The batch keeps its opening time, so the remaining items are not delayed; its byte
        count stays as it was (an over-estimate until the batch closes).
        """
        kept = [item for item in self._items if keep(item)]
        dropped = [item for item in self._items if not keep(item)]
        self._items = kept
        if not kept:
            self._bytes = 0
        return dropped
