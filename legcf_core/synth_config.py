"""The synthetic generator's settings and their checks (numpy-free, so the CLI can show
its defaults without loading the engine); :mod:`legcf_core.synth` generates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from legcf_core.errors import ConfigError


def held_out_count(n: int, test_fraction: float) -> int:
    """Test items of a user with ``n`` items: floor(test_fraction * n)."""
    return math.floor(test_fraction * n + 1e-9)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; the defaults make a 10,000-user set in about a second."""

    users: int = 10_000
    items: int = 5_000
    interactions: int = 200_000
    seed: int = 2024
    communities: int = 50
    in_community: float = 0.8
    user_exponent: float = 2.5
    item_exponent: float = 2.5
    min_per_user: int = 10
    test_fraction: float = 0.2

    def check(self) -> None:
        """Refuse settings that cannot be met, naming the setting to change."""
        for name in ("users", "items", "interactions", "communities", "min_per_user"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("user_exponent", "item_exponent"):
            if not 1.1 <= getattr(self, name) <= 10.0:
                raise ConfigError(name, f"must lie in [1.1, 10], got {getattr(self, name)}")
        if not 0.0 <= self.in_community <= 1.0:
            raise ConfigError("in_community", f"must lie in [0, 1], got {self.in_community}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError("test_fraction", f"must lie in (0, 1), got {self.test_fraction}")
        if held_out_count(self.min_per_user, self.test_fraction) < 2:
            need = math.ceil(2 / self.test_fraction)
            raise ConfigError(
                "min_per_user",
                f"must be >= {need} so that test_fraction {self.test_fraction} holds out 2 items a user "
                f"(one for validation, one for test), got {self.min_per_user}",
            )
        if self.communities > min(self.users, self.items):
            raise ConfigError("communities", f"must be <= users and items, got {self.communities}")
        if self.interactions < self.users * self.min_per_user:
            raise ConfigError(
                "interactions",
                f"must be >= users x min_per_user = {self.users * self.min_per_user:,}, "
                f"got {self.interactions:,}",
            )
        if self.interactions > self.users * self.cap:
            raise ConfigError(
                "interactions",
                f"must be <= users x items/2 = {self.users * self.cap:,} (a user takes at most half "
                f"the items), got {self.interactions:,}",
            )
        if self.min_per_user > self.cap:
            raise ConfigError("min_per_user", f"must be <= items/2 = {self.cap}, got {self.min_per_user}")

    @property
    def cap(self) -> int:
        """The most items one user gets: half the catalogue, so distinct draws always finish."""
        return self.items // 2
