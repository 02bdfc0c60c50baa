"""`RetrainSettings`: the options of one retrain, validated once, defaults stated once."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from router.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_MAX_WEIGHT", "RetrainSettings"]

DEFAULT_MAX_WEIGHT = 20.0


@dataclass(frozen=True)
class RetrainSettings:
    """The options of one retrain, checked when built (`ConfigError` naming the option).

    The defaults are the field defaults below (`RetrainSettings.default(name)`;
    `router retrain --help` shows them); each field's `metadata["option"]` is its
    `router retrain` flag, which the errors name too.

    - `log_url`: the outcome log (a SQLite path, `sqlite:///file.db` or
      `postgresql://...`); None trains on `base` alone (a registry's first version).
    - `since`: only requests newer than this; None reads the whole log.
    - `base`: outcome tables trained on besides the log.
    - `eval_data`: fixed evaluation table for the gate (a file, or a loaded table).
    - `tolerance`: promote unless the challenger's quality at equal cost is
      worse than the champion's by more than this.
    - `holdout_frac`: the most recent share of logged rows held out for the gate.
    - `max_weight`: inverse-propensity weights are clipped here.
    - `min_rows`: fewer training rows are refused; below it nothing is held out.
    - `min_logged_rows`: fewer held-out logged rows are not judged by the gate.
    - `seed`: the fit's seed.
    - `dask_partitions`: with a Dask client, where the Parquet partitions go (a
      folder every worker can read); None: the system's temporary folder.
    """

    log_url: str | None = field(default=None, metadata={"option": "--log"})
    since: timedelta | None = field(default=None, metadata={"option": "--since"})
    base: tuple[str | os.PathLike[str], ...] = field(default=(), metadata={"option": "--base"})
    # A loaded table is accepted too (the simulator has one); never compared or hashed.
    eval_data: str | os.PathLike[str] | pd.DataFrame | None = field(
        default=None, compare=False, hash=False, metadata={"option": "--eval-data"})
    tolerance: float = field(default=0.01, metadata={"option": "--min-tolerance"})
    holdout_frac: float = field(default=0.2, metadata={"option": "--holdout"})
    max_weight: float = field(default=DEFAULT_MAX_WEIGHT, metadata={"option": "--max-weight"})
    min_rows: int = field(default=50, metadata={"option": "--min-rows"})
    min_logged_rows: int = field(default=200, metadata={"option": "--min-logged-rows"})
    seed: int = field(default=0, metadata={"option": "--seed"})
    dask_partitions: str | os.PathLike[str] | None = field(
        default=None, metadata={"option": "--dask-partitions"})

    def __post_init__(self) -> None:
        if isinstance(self.base, str | os.PathLike):
            object.__setattr__(self, "base", (self.base,))  # one table, not its characters
        else:
            object.__setattr__(self, "base", tuple(self.base))
        if self.log_url is None and not self.base:
            raise ConfigError("nothing to train on: no outcome log (--log) and no base "
                              "tables (--base)",
                              hint="e.g. router retrain --log sqlite:///outcomes.db --since 7d")
        if self.since is not None and self.since <= timedelta(0):
            self._refuse("since", "must be a positive duration", "e.g. 7d or 36h")
        self._check_number("tolerance", lambda v: v >= 0, "must be >= 0",
                           "0 promotes only a challenger that is not worse at all")
        self._check_number("holdout_frac", lambda v: 0 <= v < 1, "must be in [0, 1)",
                           "e.g. 0.2 holds out the newest fifth of the logged rows")
        self._check_number("max_weight", lambda v: v > 0, "must be positive",
                           f"e.g. {DEFAULT_MAX_WEIGHT:g}")
        for name in ("min_rows", "min_logged_rows", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                self._refuse(name, "must be an integer", "e.g. 50")
        if self.min_rows < 1 or self.min_logged_rows < 1:
            name = "min_rows" if self.min_rows < 1 else "min_logged_rows"
            self._refuse(name, "must be >= 1", "e.g. 50")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option `name`, without building (and checking) settings."""
        return cls.__dataclass_fields__[name].default

    def _check_number(self, name: str, ok: Callable[[float], bool], rule: str,
                      hint: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value) or not ok(value):
            self._refuse(name, rule, hint)

    def _refuse(self, name: str, rule: str, hint: str) -> None:
        option = next(f.metadata["option"] for f in fields(self) if f.name == name)
        raise ConfigError(f"retrain setting {name} ({option}) {rule}, got "
                          f"{getattr(self, name)!r}", hint=hint)

    def to_meta(self) -> dict[str, Any]:
        """What a registered version records of the options that made it."""
        return {"since": str(self.since) if self.since else None,
                "base": [str(b) for b in self.base], "max_weight": self.max_weight,
                "tolerance": self.tolerance}
