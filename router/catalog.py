"""The model catalog: which models exist, what they cost, where they are served.

Loaded from `models/catalog.toml` and validated on load: a typo in a price or a
fallback that names no model stops start-up with the file, the model and the key.
Models priced only by a `prices.csv` table (research data, no provider) are
allowed for training and evaluation; they carry no `base_url` and cannot be
proxied.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from router.errors import ConfigError

__all__ = [
    "ModelSpec",
    "Catalog",
    "DEFAULT_CATALOG_PATH",
    "load_catalog",
    "load_prices_csv",
    "estimate_tokens",
]

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parents[1] / "models" / "catalog.toml"
CATALOG_ENV_VAR = "ROUTER_CATALOG"

PRICE_COLUMNS = ("model", "input_usd_per_mtok", "output_usd_per_mtok")


# CJK radicals to Hangul syllables and the compatibility ideographs: about one token each.
_WIDE_CHARS = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """Token count estimate used everywhere a real tokenizer is not available.

    Four characters per token is the convention of the bundled outcome data, so
    serving and training estimate input size the same way. Chinese, Japanese and
    Korean characters are about a token each in the common tokenizers, not a
    quarter of one, so each counts as one (else their requests look 4x cheaper).
    """
    if text.isascii():
        return max(1, math.ceil(len(text) / 4))
    wide = len(_WIDE_CHARS.findall(text))
    return max(1, wide + math.ceil((len(text) - wide) / 4))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model: prices in USD per 1M tokens, context window, provider and chain."""

    name: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    context_tokens: int = 128_000
    provider: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    fallbacks: tuple[str, ...] = ()

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1e6

    @property
    def api_key(self) -> str | None:
        """The provider key, read from the environment at call time, never stored."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class Catalog:
    """An immutable, validated mapping from model name to `ModelSpec`."""

    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for spec in self.models.values():
            unknown = [f for f in spec.fallbacks if f not in self.models]
            if unknown:
                raise ConfigError(
                    f"{self.source}: model {spec.name!r} has fallbacks not in the catalog: "
                    f"{', '.join(unknown)}",
                    hint=f"known models: {', '.join(sorted(self.models))}",
                )
            if spec.name in spec.fallbacks:
                raise ConfigError(f"{self.source}: model {spec.name!r} lists itself as fallback")

    def __getitem__(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(
                f"unknown model {name!r}",
                hint=f"known models: {', '.join(sorted(self.models))}",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.models)

    def by_price(self, names: Iterable[str] | None = None) -> list[str]:
        """Model names, cheapest first (by the cost of 1k input + 1k output tokens)."""
        chosen = self.names if names is None else tuple(names)
        return sorted(chosen, key=lambda n: (self[n].cost_usd(1000, 1000), n))

    def with_prices(self, prices: Mapping[str, tuple[float, float, int | None]]) -> Catalog:
        """A catalog where `prices` (model -> (input, output, context)) override or add.

        Models added this way have no provider: good for training and evaluation
        on research data, not for proxying.
        """
        merged = dict(self.models)
        for name, (price_in, price_out, context) in prices.items():
            if name in merged:
                spec = replace(merged[name], input_usd_per_mtok=price_in,
                               output_usd_per_mtok=price_out)
                if context:
                    spec = replace(spec, context_tokens=int(context))
            else:
                spec = ModelSpec(name=name, input_usd_per_mtok=price_in,
                                 output_usd_per_mtok=price_out,
                                 context_tokens=int(context or 128_000))
            merged[name] = spec
        return Catalog(merged, source=self.source)

    def subset(self, names: Iterable[str]) -> Catalog:
        """Only `names`, with fallbacks outside the subset dropped."""
        keep = {n: self[n] for n in names}
        return Catalog(
            {n: replace(s, fallbacks=tuple(f for f in s.fallbacks if f in keep))
             for n, s in keep.items()},
            source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot, stored inside every trained artifact."""
        return {"models": {n: {**asdict(s), "fallbacks": list(s.fallbacks)}
                           for n, s in self.models.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<snapshot>") -> Catalog:
        entries = data.get("models")
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{source}: expected a [models] table")
        return cls({name: _parse_entry(name, entry, source) for name, entry in entries.items()},
                   source=source)


_REQUIRED = ("input_usd_per_mtok", "output_usd_per_mtok")
_KNOWN_KEYS = {"name", "provider", "base_url", "api_key_env", "input_usd_per_mtok",
               "output_usd_per_mtok", "context_tokens", "fallbacks"}


def _parse_entry(name: str, entry: Any, source: str) -> ModelSpec:
    where = f"{source}: model {name!r}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, got {type(entry).__name__}")
    unknown = set(entry) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                          hint=f"allowed keys: {', '.join(sorted(_KNOWN_KEYS - {'name'}))}")
    for key in _REQUIRED:
        if key not in entry:
            raise ConfigError(f"{where}: missing {key}",
                              hint="prices are USD per 1M tokens, e.g. 0.27")
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ConfigError(f"{where}: {key} must be a non-negative number, got {value!r}")
    context = entry.get("context_tokens", 128_000)
    if isinstance(context, bool) or not isinstance(context, int) or context <= 0:
        raise ConfigError(f"{where}: context_tokens must be a positive integer, got {context!r}")
    fallbacks = entry.get("fallbacks", [])
    if not isinstance(fallbacks, list | tuple) or not all(isinstance(f, str) for f in fallbacks):
        raise ConfigError(f"{where}: fallbacks must be a list of model names")
    base_url = entry.get("base_url")
    if base_url is not None and not (
        isinstance(base_url, str) and base_url.startswith(("http://", "https://"))
    ):
        raise ConfigError(f"{where}: base_url must start with http:// or https://, "
                          f"got {base_url!r}")
    return ModelSpec(
        name=name,
        input_usd_per_mtok=float(entry["input_usd_per_mtok"]),
        output_usd_per_mtok=float(entry["output_usd_per_mtok"]),
        context_tokens=context,
        provider=str(entry.get("provider", "")),
        base_url=base_url,
        api_key_env=entry.get("api_key_env"),
        fallbacks=tuple(fallbacks),
    )


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate a catalog TOML file.

    Without `path`: `$ROUTER_CATALOG`, else the repository's `models/catalog.toml`.
    """
    resolved = Path(path or os.environ.get(CATALOG_ENV_VAR) or DEFAULT_CATALOG_PATH)
    try:
        raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"catalog file not found: {resolved}",
                          hint=f"pass --catalog FILE or set {CATALOG_ENV_VAR}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{resolved}: not valid TOML: {exc}") from None
    catalog = Catalog.from_dict(raw, source=str(resolved))
    if not catalog.models:
        raise ConfigError(f"{resolved}: no models defined",
                          hint="add at least one [models.NAME] table")
    return catalog


def load_prices_csv(path: str | os.PathLike[str]) -> dict[str, tuple[float, float, int | None]]:
    """Read a price table (columns as `../shared/data/prices.csv`).

    Returns model -> (input USD/1M, output USD/1M, context tokens or None).
    """
    resolved = Path(path)
    try:
        handle = resolved.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"prices file not found: {resolved}") from None
    prices: dict[str, tuple[float, float, int | None]] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in PRICE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(
                f"{resolved}: missing column(s) {', '.join(missing)}",
                hint="expected columns: model,input_usd_per_mtok,output_usd_per_mtok"
                     "[,context_tokens]",
            )
        for line_no, row in enumerate(reader, start=2):
            try:
                price_in = float(row["input_usd_per_mtok"])
                price_out = float(row["output_usd_per_mtok"])
            except (TypeError, ValueError):
                raise ConfigError(f"{resolved}, line {line_no}: prices must be numbers, got "
                                  f"{row['input_usd_per_mtok']!r}, "
                                  f"{row['output_usd_per_mtok']!r}") from None
            if not (price_in >= 0 and price_out >= 0):
                raise ConfigError(f"{resolved}, line {line_no}: prices must be >= 0")
            context_raw = (row.get("context_tokens") or "").strip()
            prices[row["model"].strip()] = (
                price_in, price_out, int(float(context_raw)) if context_raw else None)
    if not prices:
        raise ConfigError(f"{resolved}: no prices in file")
    return prices
