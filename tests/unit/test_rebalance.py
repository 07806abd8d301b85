from __future__ import annotations

from kafka.structs import TopicPartition

from worker.service.rebalance import PartitionTracker


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
