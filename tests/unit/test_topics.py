"""Where a terminal's records go: the partition a record keyed by its id would land on."""

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.topics import terminal_partition


@pytest.mark.parametrize("partitions", [1, 3, 6, 12])
def test_a_terminal_s_partition_is_the_default_partitioner_s_for_its_id(partitions):
    ids = [f"T{i:05d}" for i in range(500)] + ["T-FB", "é-terminal"]
    keyed = [DefaultPartitioner()(t.encode(), list(range(partitions)), list(range(partitions))) for t in ids]
    assert [terminal_partition(t, partitions) for t in ids] == keyed
    if partitions > 1:
        assert len(set(keyed)) == partitions
