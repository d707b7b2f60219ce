"""The exception family a user can see.

The CLI catches :class:`LegcfError` once, prints its message on one line and
exits non-zero; anything else is a bug and keeps its traceback. Engine
messages name config fields (``lr``, ``codebook_size``), never command-line
flags: a :class:`ConfigError` carries the field, and the CLI shows it as the
flag that sets it.
"""

from __future__ import annotations


class LegcfError(Exception):
    """Base of every error caused by the user's input or environment."""

    def render(self, names: dict[str, str] | None = None) -> str:
        """The message, with config field names shown as ``names`` maps them (e.g. to flags)."""
        return str(self)


class DataError(LegcfError):
    """The dataset is missing, malformed or empty."""


class ConfigError(LegcfError):
    """A setting is out of range or contradicts the data (e.g. c > N, t > c).

    ``ConfigError("lr", "must be > 0, got -1")`` reads ``lr must be > 0, got -1``;
    :meth:`render` puts another name (a flag) in place of the field.
    """

    def __init__(self, field: str | None, problem: str | None = None) -> None:
        if problem is None:  # a message that names no single field
            field, problem = None, field or ""
        self.field = field
        self.problem = problem
        super().__init__(self.render())

    def render(self, names: dict[str, str] | None = None) -> str:
        if self.field is None:
            return self.problem
        return f"{(names or {}).get(self.field, self.field)} {self.problem}"


class ArtifactError(LegcfError):
    """A run directory is missing a stage's outputs or holds mismatched ones."""


class DeviceError(LegcfError):
    """The requested compute device is not available."""


class DistributedError(LegcfError):
    """A training process of a torchrun launch failed, was lost or could not join the others."""


class TrainingError(LegcfError):
    """Training diverged (NaN or infinite loss); ``field`` names the setting to change."""

    def __init__(self, problem: str, field: str | None = None) -> None:
        self.problem, self.field = problem, field
        super().__init__(self.render())

    def render(self, names: dict[str, str] | None = None) -> str:
        if self.field is None:
            return self.problem
        return f"{self.problem} ({(names or {}).get(self.field, self.field)})"
