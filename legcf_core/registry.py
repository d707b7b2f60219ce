"""Names of the embedding layers and backbones, and where their code lives.

This module imports neither torch nor scipy, so the CLI can list choices and
draw plots without loading the engine; :func:`layer_type` and
:func:`backbone_type` import a class only when it is asked for. Adding a layer
is one entry here and one module under ``legcf_core/layers``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from legcf_core.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """A registered layer or backbone: its name, what people call it, where it lives."""

    name: str
    label: str  # for tables and plot legends
    target: str  # "module:Class"
    marker: str = "o"  # matplotlib marker in comparison plots
    summary: str = ""  # one line for --help
    uses_partition: bool = False  # layers: trained from a partition, with c, t, w*, init and m
    sized_by_budget: bool = False  # layers: sized by a parameter budget (LEGCF's at c and t by default)

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


LAYERS: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "legcf",
            "LEGCF",
            "legcf_core.layers.codebook:CodebookLayer",
            "o",
            "c meta-embeddings and a sparse assignment S (the paper's)",
            uses_partition=True,
        ),
        Entry("full", "full table", "legcf_core.layers.full:FullLayer", "s", "one free row per entity"),
        Entry(
            "qr",
            "QR",
            "legcf_core.layers.qr:QRLayer",
            "^",
            "quotient-remainder compositional rows",
            sized_by_budget=True,
        ),
        Entry(
            "pep",
            "PEP",
            "legcf_core.layers.pep:PEPLayer",
            "D",
            "learned soft-threshold pruning",
            sized_by_budget=True,
        ),
        Entry(
            "tt",
            "TT-Rec",
            "legcf_core.layers.tt:TTLayer",
            "v",
            "three tensor-train cores at the rank the budget allows",
            sized_by_budget=True,
        ),
    )
}

BACKBONES: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "lightgcn", "LightGCN", "legcf_core.backbones:LightGCN", summary="parameter-free mean of A^l E"
        ),
        Entry(
            "lightgcn-mix",
            "LightGCN (mixed layers)",
            "legcf_core.backbones:MixedLightGCN",
            summary="LightGCN with a learned weight per layer and dimension (LEGCF's default)",
        ),
        Entry("ngcf", "NGCF", "legcf_core.backbones:NGCF", summary="two weight matrices per layer"),
        Entry("lrgccf", "LR-GCCF", "legcf_core.backbones:LRGCCF", summary="linear residual layers"),
    )
}


def _entry(kind: str, table: dict[str, Entry], name: str) -> Entry:
    if name not in table:
        raise ConfigError(kind, f"{name!r} is unknown; expected one of {', '.join(table)}")
    return table[name]


def layer_entry(name: str) -> Entry:
    return _entry("embedding", LAYERS, name)


def backbone_entry(name: str) -> Entry:
    return _entry("backbone", BACKBONES, name)


def layer_type(name: str) -> Any:
    """The :class:`~legcf_core.layers.EmbeddingLayer` subclass registered as ``name``."""
    return layer_entry(name).load()


def backbone_type(name: str) -> Any:
    """The :class:`~legcf_core.backbones.Backbone` subclass registered as ``name``."""
    return backbone_entry(name).load()


AUTO_BACKBONE = "auto"
MIXED_BACKBONE = "lightgcn-mix"


def resolve_backbone(name: str, embedding: str, sharded: bool = False) -> str:
    """The backbone ``name`` stands for: itself, or for ``auto`` the embedding's default. LEGCF
    trains on LightGCN with mixed layers (ml-1m keeps 92% of the full table instead of 87%,
    docs/results.md) except under sharded training, whose per-rank operator is LightGCN's mean;
    every other layer on LightGCN (a free table overfits with mixed layers)."""
    if name != AUTO_BACKBONE:
        backbone_entry(name)
        return name
    return MIXED_BACKBONE if embedding == "legcf" and not sharded else "lightgcn"
