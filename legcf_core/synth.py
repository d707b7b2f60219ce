"""Synthetic interaction data with a known shape, for scaling runs and tests.

Why: Gowalla is the largest graph legcf ships against, and scaling claims need
graphs of any size whose structure is known. The generator plants what a
recommender and METIS can find, with the heavy tails real data has:

* **User activity** follows a power law: user u of activity rank r (ranks are
  a seeded permutation of the users) gets ``min_per_user + share`` distinct
  items, the shares proportional to ``r ** -(1 / (user_exponent - 1))``. The
  number of users with x extra items then falls as ``x ** -user_exponent``
  (a Zipf rank law with exponent a has a degree density exponent 1 + 1/a).
  The counts sum to exactly ``interactions``; none exceeds half the items.
* **Item popularity** follows a power law the same way: item i of rank r has
  weight ``r ** -(1 / (item_exponent - 1))``, so item degrees fall roughly as
  ``k ** -item_exponent``.
* **Communities**: users and items each belong to one of ``communities``
  groups (uniformly at random). A user's draw comes from their own group's
  items with probability ``in_community`` and from all items otherwise, in
  both cases in proportion to item weight. Items are drawn without
  repetition per user.
* **Split**: ``floor(test_fraction * n_u)`` of each user's items, chosen at
  random, go to ``test.txt``, the rest to ``train.txt`` (LightGCN's format,
  ``user item item ...``), which ``legcf prepare --data OUT`` reads as it is.

Users are generated in blocks of about :data:`BLOCK_DRAWS` draws, each with
its own seeded generator, and written as they are made, so memory stays at a
block's worth whatever the size, and the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from legcf_core.errors import ConfigError, DataError
from legcf_core.store_files import open_atomic, write_bytes_atomic
from legcf_core.synth_config import SynthConfig

__all__ = ["SynthConfig", "generate"]

BLOCK_DRAWS = 1 << 21  # draws per block of users: bounds memory, not results' meaning
UNIFORM_AFTER = 8  # rounds of weighted draws before a short user's rest is drawn uniformly
FILES = ("train.txt", "test.txt")
SUMMARY = "synth.json"


def held_out(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Test items per user: floor(test_fraction * n_u), as :func:`held_out_count` for one."""
    return np.floor(test_fraction * counts + 1e-9).astype(np.int64)


def zipf_shares(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Weights summing to 1 that follow rank ** -(1 / (exponent - 1)), ranks a seeded permutation."""
    ranks = rng.permutation(n) + 1.0
    weights = ranks ** (-1.0 / (exponent - 1.0))
    return weights / weights.sum()


def user_counts(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Distinct items per user: min_per_user plus a power-law share, summing to ``interactions``
    exactly, none above the cap (the excess of capped users goes to the others by weight)."""
    shares = zipf_shares(config.users, config.user_exponent, rng)
    counts = np.full(config.users, config.min_per_user, dtype=np.int64)
    extra = config.interactions - counts.sum()
    while extra > 0:
        room = config.cap - counts
        weights = np.where(room > 0, shares, 0.0)
        wanted = extra * weights / weights.sum()
        add = np.minimum(np.floor(wanted).astype(np.int64), room)
        short = extra - add.sum()
        if short > 0:  # largest remainders first, among users with room left
            remainder = np.where(room - add > 0, wanted - np.floor(wanted), -1.0)
            top = np.argsort(-remainder, kind="stable")[:short]
            add[top[remainder[top] >= 0]] += 1
        counts += add
        extra = config.interactions - counts.sum()
    return counts


class ItemSampler:
    """Weighted draws of items, from one community's items or from all of them."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator) -> None:
        weights = zipf_shares(config.items, config.item_exponent, rng)
        community = rng.integers(0, config.communities, size=config.items)
        self.order = np.argsort(community, kind="stable")  # items grouped by community
        self.cumulative = np.cumsum(weights[self.order])
        bounds = np.searchsorted(community[self.order], np.arange(config.communities + 1))
        edges = np.concatenate([[0.0], self.cumulative])
        self.low, self.high = edges[bounds[:-1]], edges[bounds[1:]]
        self.total = self.cumulative[-1]
        self.empty = self.high <= self.low  # a community that drew no items
        self.n_items = config.items

    def draw(self, groups: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item a row: from ``groups``' community where ``inside``, else from all items."""
        inside = inside & ~self.empty[groups]
        low = np.where(inside, self.low[groups], 0.0)
        high = np.where(inside, self.high[groups], self.total)
        points = low + rng.random(groups.size) * (high - low)
        slots = np.searchsorted(self.cumulative, points, side="right")
        return self.order[np.minimum(slots, self.n_items - 1)]


def block_items(
    counts: np.ndarray, groups: np.ndarray, sampler: ItemSampler, p_in: float, rng: np.random.Generator
) -> np.ndarray:
    """Sorted keys ``local user * n_items + item`` of one block: ``counts[u]`` distinct items a user.

    Each round draws what every user still lacks and drops repeats, so no user
    ever has too many; the later rounds are small. Users whose weighted draws
    keep repeating (a user taking much of their community) finish uniformly.
    """
    n = sampler.n_items
    keys = np.empty(0, dtype=np.int64)
    missing = counts
    for round_ in range(1000):
        users = np.repeat(np.arange(counts.size), missing)
        if round_ < UNIFORM_AFTER:
            items = sampler.draw(groups[users], rng.random(users.size) < p_in, rng)
        else:
            items = rng.integers(0, n, size=users.size)
        new = sorted_unique(users * n + items)
        if keys.size:
            found = np.minimum(np.searchsorted(keys, new), keys.size - 1)
            new = new[keys[found] != new]
            keys = np.sort(np.concatenate([keys, new]), kind="stable")  # a merge of two sorted runs
        else:
            keys = new
        missing = counts - np.bincount(keys // n, minlength=counts.size)
        if not missing.any():
            return keys
    raise DataError("could not draw enough distinct items; lower --interactions or raise --items")


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (a sort and a compare: faster here than np.unique's hashing)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if values.size else values


def split_block(
    users: np.ndarray, counts: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """A test mask over a block's pairs, grouped by user: a random floor(fraction * n_u) of each user's.

    ``users + uniform`` sorts by user, then randomly within a user: one sort, no lexsort.
    """
    by_random = np.argsort(users + rng.random(users.size))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.empty(users.size, dtype=np.int64)
    rank[by_random] = np.arange(users.size) - np.repeat(starts, counts)
    return rank < held_out(counts, fraction)[users]


def lightgcn_bytes(users: np.ndarray, items: np.ndarray) -> bytes:
    """``user item item ...`` lines for (user, item) pairs sorted by user, as ASCII bytes."""
    if users.size == 0:
        return b""
    line_start = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    tokens = np.empty(users.size + line_start.size, dtype=np.int64)
    user_slots = line_start + np.arange(line_start.size)
    is_user = np.zeros(tokens.size, dtype=bool)
    is_user[user_slots] = True
    tokens[user_slots] = users[line_start]
    tokens[~is_user] = items
    separators = np.full(tokens.size, ord(" "), dtype=np.uint8)
    separators[np.r_[user_slots[1:] - 1, tokens.size - 1]] = ord("\n")
    return ascii_tokens(tokens, separators)


def ascii_tokens(tokens: np.ndarray, separators: np.ndarray) -> bytes:
    """Non-negative integers in decimal, each followed by its separator byte (vectorised)."""
    digits = np.ones(tokens.size, dtype=np.int64)
    power = 10
    while (big := tokens >= power).any():
        digits += big
        power *= 10
    ends = np.cumsum(digits + 1)
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    out[ends - 1] = separators
    last = ends - 2  # each token's last digit
    rest = tokens.copy()
    for place in range(int(digits.max())):
        live = np.flatnonzero(digits > place)
        out[last[live] - place] = ord("0") + rest[live] % 10
        rest[live] //= 10
    return out.tobytes()


def write_block(
    handles: tuple[BinaryIO, BinaryIO], users: np.ndarray, items: np.ndarray, test: np.ndarray
) -> None:
    """Append one block's train and test lines; pairs come sorted by user, then item."""
    for handle, mask in zip(handles, (~test, test), strict=True):
        handle.write(lightgcn_bytes(users[mask], items[mask]))


def generate(out: Path, config: SynthConfig, force: bool = False) -> dict[str, Any]:
    """Write ``train.txt``, ``test.txt`` and ``synth.json`` (settings and counts) into ``out``."""
    config.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; give a directory to write the dataset into")
    existing = [name for name in (*FILES, SUMMARY) if (out / name).exists()]
    if existing and not force:
        raise ConfigError("force", f"{out / existing[0]} exists; pass --force to replace it")
    started = time.perf_counter()
    root = np.random.default_rng(config.seed)
    counts = user_counts(config, root)
    groups = root.integers(0, config.communities, size=config.users)
    sampler = ItemSampler(config, root)
    bounds = block_bounds(counts)
    item_degree = np.zeros(config.items, dtype=np.int64)
    n_test = 0
    with open_atomic(out / FILES[0]) as train_file, open_atomic(out / FILES[1]) as test_file:
        for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            rng = np.random.default_rng([config.seed, index + 1])
            keys = block_items(counts[lo:hi], groups[lo:hi], sampler, config.in_community, rng)
            local, items = keys // config.items, keys % config.items
            test = split_block(local, counts[lo:hi], config.test_fraction, rng)
            write_block((train_file, test_file), local + lo, items, test)
            item_degree += np.bincount(items, minlength=config.items)
            n_test += int(test.sum())
    summary = summarize(config, counts, item_degree, n_test)
    write_bytes_atomic(out / SUMMARY, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return {**summary, "seconds": round(time.perf_counter() - started, 3)}


def block_bounds(counts: np.ndarray) -> np.ndarray:
    """User indices where blocks of about BLOCK_DRAWS wanted items start (and the end)."""
    cuts = np.searchsorted(np.cumsum(counts), np.arange(BLOCK_DRAWS, counts.sum(), BLOCK_DRAWS))
    return np.unique(np.r_[0, cuts, counts.size])


def summarize(
    config: SynthConfig, counts: np.ndarray, item_degree: np.ndarray, n_test: int
) -> dict[str, Any]:
    """The settings and what came out: sizes, degree ranges and the split (no timings: the
    file is part of the seeded output and keeps the same bytes)."""
    return {
        "generator": "legcf synth",
        "config": asdict(config),
        "users": int(counts.size),
        "items_with_interactions": int((item_degree > 0).sum()),
        "interactions": int(counts.sum()),
        "train": int(counts.sum()) - n_test,
        "test": n_test,
        "user_degree": {"min": int(counts.min()), "max": int(counts.max())},
        "item_degree": {"min": int(item_degree.min()), "max": int(item_degree.max())},
    }
