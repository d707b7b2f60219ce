"""Run by torchrun from tests/test_distributed.py: each rank builds its rows of P for a small
seeded graph by sharded propagation and saves them (with their ids) as OUT/rank{R}.npz."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist
from tests_graphs import small_graph

from legcf_core.distributed import Group
from legcf_core.sharding import ShardOperator, assign_owners, csr_chunks, entity_degrees, read_own_rows


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    import torch

    group = Group(dist.get_rank(), dist.get_world_size(), "gloo", torch.device("cpu"))
    train, assignment, parts = small_graph()
    owner = assign_owners(parts, entity_degrees(train), group.world_size)
    rows = read_own_rows(csr_chunks(train), owner, group.rank, train.shape[0])
    operator = ShardOperator(group, rows, owner, layers=3)
    operator.build(assignment[rows.own])
    np.savez(
        out / f"rank{group.rank}.npz",
        own=rows.own,
        entity=operator.entity.numpy(),
        meta=operator.meta.numpy(),
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
