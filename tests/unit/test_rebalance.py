from __future__ import annotations

import logging

import pytest
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.structs import TopicPartition

from worker.service.rebalance import PartitionTracker, uses_cooperative_protocol


def tp(partition: int) -> TopicPartition:
    return TopicPartition("ecg.windows", partition)


def test_revoked_and_not_given_back_is_lost_kept_ones_are_not() -> None:
    seen: list[frozenset[tuple[str, int]]] = []
    tracker = PartitionTracker(on_change=seen.append)
    tracker.on_partitions_assigned({tp(0), tp(1)})
    tracker.on_partitions_revoked({tp(0), tp(1)})
    assert tracker.rebalancing()
    assert tracker.assigned() == frozenset()
    tracker.on_partitions_assigned({tp(1)})
    assert not tracker.rebalancing()
    assert tracker.assigned() == {("ecg.windows", 1)}
    assert tracker.take_lost() == {("ecg.windows", 0)}
    assert tracker.take_lost() == frozenset()  # reported once
    assert seen[-1] == {("ecg.windows", 1)}  # readiness follows the assignment


def test_lost_membership_drops_the_partitions_at_once() -> None:
    seen: list[frozenset[tuple[str, int]]] = []
    tracker = PartitionTracker(on_change=seen.append)
    tracker.on_partitions_assigned({tp(0), tp(1)})
    tracker.on_partitions_lost({tp(0)})
    assert tracker.assigned() == {("ecg.windows", 1)}
    assert tracker.take_lost() == {("ecg.windows", 0)}
    assert seen[-1] == {("ecg.windows", 1)}
    assert not tracker.rebalancing()


def test_cooperative_revocation_is_a_loss_and_never_freezes_batching() -> None:
    # Cooperative: kafka-python calls "revoked" after the join with the partitions already
    # moved, and "assigned" only when some were added. Before the fix, rebalancing() stayed
    # true forever after the first revocation, so no batch was delivered again.
    seen: list[frozenset[tuple[str, int]]] = []
    tracker = PartitionTracker(on_change=seen.append, cooperative=True)
    tracker.on_partitions_assigned({tp(0), tp(1)})
    tracker.on_partitions_revoked({tp(0)})  # no "assigned" follows: nothing was added
    assert not tracker.rebalancing()
    assert tracker.assigned() == {("ecg.windows", 1)}
    assert tracker.take_lost() == {("ecg.windows", 0)}
    assert seen[-1] == {("ecg.windows", 1)}
    tracker.on_partitions_assigned({tp(2)})  # incremental: added to what it keeps
    assert tracker.assigned() == {("ecg.windows", 1), ("ecg.windows", 2)}


def test_protocol_follows_the_configured_assignors() -> None:
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

    assert uses_cooperative_protocol([CooperativeStickyAssignor])
    assert not uses_cooperative_protocol([RangePartitionAssignor, StickyPartitionAssignor])
    assert not uses_cooperative_protocol([])


def test_losses_accumulate_until_the_loop_takes_them() -> None:
    # The loop drops the records of lost partitions between polls; several callbacks may
    # come before it looks, and none of their losses may be forgotten.
    tracker = PartitionTracker()
    tracker.on_partitions_assigned({tp(0), tp(1), tp(2), tp(3)})
    tracker.on_partitions_lost({tp(3)})
    tracker.on_partitions_lost({tp(2)})
    tracker.on_partitions_revoked({tp(0), tp(1)})
    tracker.on_partitions_assigned({tp(1)})
    assert tracker.take_lost() == {("ecg.windows", 0), ("ecg.windows", 2), ("ecg.windows", 3)}


def test_cooperative_revocations_accumulate_as_losses() -> None:
    tracker = PartitionTracker(cooperative=True)
    tracker.on_partitions_assigned({tp(0), tp(1), tp(2)})
    tracker.on_partitions_revoked({tp(0)})
    tracker.on_partitions_revoked({tp(1)})
    assert tracker.take_lost() == {("ecg.windows", 0), ("ecg.windows", 1)}
    assert tracker.assigned() == {("ecg.windows", 2)}


def test_a_retried_eager_join_keeps_the_first_revocation() -> None:
    # A failed join is retried: "revoked" comes again, now with nothing left to revoke.
    seen: list[frozenset[tuple[str, int]]] = []
    tracker = PartitionTracker(on_change=seen.append)
    tracker.on_partitions_assigned({tp(0), tp(1)})
    tracker.on_partitions_revoked({tp(0), tp(1)})
    assert seen[-1] == frozenset()  # not ready while nothing is owned
    tracker.on_partitions_revoked(set())
    assert tracker.rebalancing()
    tracker.on_partitions_assigned({tp(1)})
    assert tracker.take_lost() == {("ecg.windows", 0)}


def test_the_log_names_the_partitions_of_each_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.service.rebalance")
    tracker = PartitionTracker()
    tracker.on_partitions_assigned({tp(1), tp(0), TopicPartition("ecg.other", 0)})
    tracker.on_partitions_revoked({tp(1), tp(0)})
    tracker.on_partitions_lost({TopicPartition("ecg.other", 0)})
    tracker.on_partitions_assigned(set())
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "partitions assigned: ecg.other[0], ecg.windows[0], ecg.windows[1]"),
        ("INFO", "partitions revoked: ecg.windows[0], ecg.windows[1]"),
        ("WARNING", "partitions lost: ecg.other[0]"),
        ("INFO", "partitions assigned: none"),
    ]


def test_protocol_accepts_assignor_instances_as_well_as_classes() -> None:
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

    assert uses_cooperative_protocol([CooperativeStickyAssignor()])
    assert not uses_cooperative_protocol([CooperativeStickyAssignor(), RangePartitionAssignor])
