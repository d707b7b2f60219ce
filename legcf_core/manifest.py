"""The run manifest's schema, checked on every read.

A manifest is JSON that people and scripts may edit, so everything the stages
read from it is checked here first: the fields each stage's entry must have,
their types, the checksums' form and the stage names. Fields the stages do not
read may hold any JSON, but no document nests deeper than :data:`MAX_DEPTH`
(a deep one would exhaust the recursion of the JSON writer).

The schema is plain Python rather than a schema library: it is small, it
only needs types, ranges and names, and its messages name the exact field
(``stages.refine.kept``), which is what the user has to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from legcf_core.config import VALIDATION_METRIC

MAX_DEPTH = 32
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ManifestProblem(Exception):
    """What is wrong with a manifest, and where (a dotted path into it)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}" if where else problem)


class Shape:
    """One node of the schema: ``check`` raises :class:`ManifestProblem` for a bad value."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


class AnyJSON(Shape):
    def check(self, value: Any, where: str) -> None:
        return None  # types are JSON's; depth is bounded by check_depth


@dataclass(frozen=True)
class Scalar(Shape):
    """A JSON scalar of one of ``kinds`` ("text", "int", "number", "bool", "null")."""

    kinds: tuple[str, ...] = ("text", "int", "number", "bool", "null")
    low: float | None = None

    def check(self, value: Any, where: str) -> None:
        kind = _kind(value)
        if kind not in self.kinds and not (kind == "int" and "number" in self.kinds):
            raise ManifestProblem(where, f"must be {' or '.join(self.kinds)}, got {_describe(value)}")
        if self.low is not None and value < self.low:
            raise ManifestProblem(where, f"must be >= {self.low:g}, got {value}")


@dataclass(frozen=True)
class Digest(Shape):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or not _DIGEST.fullmatch(value):
            raise ManifestProblem(where, f"must be a sha256 in hex, got {_describe(value)}")


@dataclass(frozen=True)
class OneOf(Shape):
    values: tuple[Any, ...]

    def check(self, value: Any, where: str) -> None:
        if _kind(value) == "bool" or value not in self.values:
            raise ManifestProblem(
                where, f"must be {' or '.join(map(repr, self.values))}, got {_describe(value)}"
            )


@dataclass(frozen=True)
class ListOf(Shape):
    item: Shape

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ManifestProblem(where, f"must be a list, got {_describe(value)}")
        for index, item in enumerate(value):
            self.item.check(item, f"{where}[{index}]")


@dataclass(frozen=True)
class Obj(Shape):
    """An object with ``required`` and ``optional`` fields; any other key's value must
    match ``extra`` (None: no other keys)."""

    required: Mapping[str, Shape] = field(default_factory=dict)
    optional: Mapping[str, Shape] = field(default_factory=dict)
    extra: Shape | None = AnyJSON()

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ManifestProblem(where, f"must be an object, got {_describe(value)}")
        for key in self.required:
            if key not in value:
                raise ManifestProblem(_join(where, key), "is missing")
        for key, item in value.items():
            shape = self.required.get(key) or self.optional.get(key) or self.extra
            if shape is None:
                raise ManifestProblem(_join(where, key), "is not a known field")
            shape.check(item, _join(where, key))


@dataclass(frozen=True)
class MapOf(Shape):
    """An object whose keys are free and whose values all match ``value``."""

    value: Shape

    def check(self, value: Any, where: str) -> None:
        Obj(extra=self.value).check(value, where)


SCALAR = Scalar()
TEXT = Scalar(("text",))
NUMBER = Scalar(("number",))
DIGESTS = MapOf(Digest())
SCALARS = MapOf(SCALAR)
FILES = {"inputs": DIGESTS, "outputs": DIGESTS}
TIMES = {"finished_at": TEXT, "seconds": NUMBER}


def _entry(required: Mapping[str, Shape], optional: Mapping[str, Shape] | None = None) -> Obj:
    return Obj({**FILES, **required}, {**TIMES, **(optional or {})})


# null when the data has no validation split (--validation none)
VALIDATED_METRICS = Obj({VALIDATION_METRIC: Scalar(("number", "null"))}, extra=SCALAR)
# How many processes trained (torchrun), and the training positives each took over the stage.
PROCESSES = {"world_size": Scalar(("int",), 1), "rank_positives": ListOf(Scalar(("int",), 0))}
STAGES = {
    "prepare": _entry(
        {
            "config": Obj({"seed": Scalar(("int",), 0), "test_fraction": NUMBER, "data": TEXT}, extra=SCALAR),
            "metrics": SCALARS,
        },
        {"sources": DIGESTS},
    ),
    "partition": _entry(
        {
            "config": Obj(
                {"codebook_size": Scalar(("int",), 1), "per_entity": Scalar(("int",), 1), "init": TEXT},
                extra=SCALAR,
            ),
            "metrics": SCALARS,
        }
    ),
    "pretrain": _entry(
        {"config": Obj({"embedding": TEXT, "backbone": TEXT}, extra=SCALAR), "metrics": VALIDATED_METRICS},
        {"history": ListOf(SCALARS), **PROCESSES},
    ),
    "refine": _entry(
        {"config": SCALARS, "metrics": VALIDATED_METRICS, "kept": OneOf(("pretrain", "refine"))},
        {"history": ListOf(SCALARS), "rows_kept_at_update": ListOf(Scalar(("int",), 0)), **PROCESSES},
    ),
    "evaluate": _entry({"results": MapOf(Obj({"inputs": DIGESTS}, extra=SCALAR))}),
    "export": _entry({"file": TEXT, "sha256": Digest(), "metrics": SCALARS}),
    "export_compact": _entry({"file": TEXT, "sha256": Digest(), "metrics": SCALARS}),
}
MANIFEST = Obj(
    {
        "format": TEXT,
        "format_version": Scalar(("int",)),
        "dataset": Obj({"fingerprint": Digest()}, extra=SCALAR),
        "stages": Obj(optional=STAGES, extra=None),
    }
)


def check_manifest(document: Any) -> None:
    """Raise :class:`ManifestProblem` unless ``document`` meets :data:`MANIFEST`."""
    check_depth(document)
    MANIFEST.check(document, "")


def check_depth(document: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit``, without recursion."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                raise ManifestProblem("", f"is nested more than {limit} levels deep")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, list) else "object"


def _describe(value: Any) -> str:
    kind = _kind(value)
    if kind in ("list", "object", "null"):
        return {"list": "a list", "object": "an object", "null": "null"}[kind]
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
