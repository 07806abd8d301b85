from __future__ import annotations

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
