"""The exception family a user can see.

The CLI catches :class:`LegcfError` once, prints its message on one line and
exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LegcfError(Exception):
    """Base of every error caused by the user's input or environment."""


class DataError(LegcfError):
    """The dataset is missing, malformed or empty."""


class ConfigError(LegcfError):
    """An option is out of range or contradicts the data (e.g. c > N, t > c)."""


class ArtifactError(LegcfError):
    """A run directory is missing a stage's outputs or holds mismatched ones."""


class DeviceError(LegcfError):
    """The requested compute device is not available."""


class TrainingError(LegcfError):
    """Training diverged (NaN or infinite loss)."""
