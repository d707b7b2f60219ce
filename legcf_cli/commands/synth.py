"""``legcf synth``: a synthetic dataset with power-law degrees and planted communities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from legcf_cli.options import JsonOpt, SeedOpt
from legcf_cli.output import show
from legcf_core.synth_config import SynthConfig

DEFAULT = SynthConfig()

OutArg = Annotated[Path, typer.Argument(help="Directory to write train.txt, test.txt and synth.json into.")]
UsersOpt = Annotated[int, typer.Option("--users", min=1, help="Number of users.")]
ItemsOpt = Annotated[int, typer.Option("--items", min=2, help="Number of items (ids 0..I-1).")]
InteractionsOpt = Annotated[
    int, typer.Option("--interactions", min=1, help="Distinct (user, item) pairs, train and test together.")
]
CommunitiesOpt = Annotated[
    int, typer.Option("--communities", min=1, help="Planted groups; users and items each belong to one.")
]
InsideOpt = Annotated[
    float,
    typer.Option("--in-community", min=0.0, max=1.0, help="Share of a user's draws from their own group."),
]
UserExpOpt = Annotated[
    float,
    typer.Option(
        "--user-exponent",
        min=1.1,
        max=10.0,
        help="gamma_u: users with x items over the floor fall as x^-gamma_u.",
    ),
]
ItemExpOpt = Annotated[
    float,
    typer.Option(
        "--item-exponent", min=1.1, max=10.0, help="gamma_i: items with k users fall about as k^-gamma_i."
    ),
]
MinOpt = Annotated[
    int,
    typer.Option(
        "--min-per-user", min=1, help="Floor of a user's items; each gets this plus a power-law share."
    ),
]
FractionOpt = Annotated[
    float, typer.Option("--test-fraction", min=0.0, max=1.0, help="Per-user share written to test.txt.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the dataset files already in OUT.")]


def synth(
    out: OutArg,
    users: UsersOpt = DEFAULT.users,
    items: ItemsOpt = DEFAULT.items,
    interactions: InteractionsOpt = DEFAULT.interactions,
    seed: SeedOpt = DEFAULT.seed,
    communities: CommunitiesOpt = DEFAULT.communities,
    in_community: InsideOpt = DEFAULT.in_community,
    user_exponent: UserExpOpt = DEFAULT.user_exponent,
    item_exponent: ItemExpOpt = DEFAULT.item_exponent,
    min_per_user: MinOpt = DEFAULT.min_per_user,
    test_fraction: FractionOpt = DEFAULT.test_fraction,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a synthetic dataset (LightGCN format) that 'legcf prepare --data OUT' reads.

    Power-law user activity and item popularity, users and items in planted
    communities, and a per-user test split; the same seed gives the same bytes."""
    from legcf_core.synth import generate

    config = SynthConfig(
        users, items, interactions, seed, communities, in_community,
        user_exponent, item_exponent, min_per_user, test_fraction,
    )  # fmt: skip
    summary = generate(out, config, force)
    summary.pop("config")
    show(f"synthetic dataset in {out}", _flat(summary), as_json)


def _flat(summary: dict) -> dict:
    """Degree ranges as 'min..max' for the table."""
    return {k: (f"{v['min']}..{v['max']}" if isinstance(v, dict) else v) for k, v in summary.items()}
