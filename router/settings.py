"""Serving configuration: one typed `Settings`, from flags, environment and a TOML file.

Precedence, highest first: keyword arguments (what `router serve` flags set),
environment variables `ROUTER_<NAME>`, the TOML file (`ROUTER_CONFIG=path` or
`router serve --config FILE`; top-level keys named like the options below), then
the defaults. Build it with `load_settings(config=..., **overrides)`: a bad value
raises `ConfigError` naming the variable (`ROUTER_EXPLORATION`), the value and
the fix, so a typo stops start-up instead of serving with a surprise.

Every option, its default and its meaning: `options_table()` renders them as a
Markdown table from the field descriptions below (the README reuses it:
`python -m router.settings`), so the documentation cannot drift from the code.

Upstream provider keys are never settings: they are read from the environment
variable each catalog model names (`api_key_env`) at call time, and sent only
to that model's own `base_url`. With `upstream_base_url` (one URL for every
model) none of them is sent: that URL gets `upstream_api_key`, its own key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from router.errors import ConfigError

__all__ = [
    "Settings",
    "load_settings",
    "options_table",
    "check_key",
    "key_digest",
    "key_id",
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
]

ENV_PREFIX = "ROUTER_"
CONFIG_ENV_VAR = "ROUTER_CONFIG"
_HASHED_PREFIX = "sha256:"


def key_digest(key: str) -> bytes:
    """sha256 of a client key; only digests are kept in memory after start-up."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_id(digest: bytes) -> str:
    """A short, non-reversible id of a client key for the outcome log."""
    return digest.hex()[:12]


class Settings(BaseSettings):
    """Everything `router serve` can be told; see the module docstring for the table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True,
        # The TOML path is chosen per load (see `load_settings`), never at import.
        toml_file=None,
    )

    model_dir: Path | None = Field(None, description=(
        "a trained artifact folder to serve; its `meta.json` is polled for changes"))
    registry_dir: Path | None = Field(None, description=(
        "a registry root (`models/`): serves its `CURRENT` version and hot-reloads on "
        "promote; used when `model_dir` is unset"))
    catalog: Path | None = Field(None, description=(
        "catalog TOML (prices, base URLs, fallbacks); default `models/catalog.toml`"))
    upstream_base_url: str | None = Field(None, description=(
        "send every model to this OpenAI-compatible base URL (fake upstream, a gateway); the "
        "providers' keys are then never sent, only `upstream_api_key`; plain `http://` only "
        "to a loopback host unless `upstream_allow_http`"))
    upstream_api_key: SecretStr | None = Field(None, description=(
        "the key sent to `upstream_base_url` (the gateway's own, as `Authorization: "
        "Bearer`); unset = no key"))
    upstream_allow_http: bool = Field(False, description=(
        "allow a plain `http://` `upstream_base_url` on a host other than loopback: prompts, "
        "answers and `upstream_api_key` then cross the network unencrypted"))
    default_quality_bar: float | None = Field(None, description=(
        "bar in [0, 1] for `model: router` and `/v1/route` without `quality_bar`; default: "
        "the model's `default_bar`, else 0.7"))
    max_latency_ms: float | None = Field(None, description=(
        "latency limit in ms for requests that give none (`max_latency_ms` field, "
        "`x-router-max-latency-ms` header): models expected to take longer are skipped, "
        "the fastest is chosen when none is within it; unset = no limit. Needs a model "
        "that predicts latency"))
    exploration: float = Field(0.02, description=(
        "share in [0, 0.5] of routed chat requests sent to a uniformly random allowed "
        "model, logged with its exact propensity"))
    exploration_seed: int | None = Field(None, description=(
        "seed of the exploration draw (tests, simulations)"))
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list, description=(
        "client keys, comma-separated or a JSON list; give `sha256:<hex>` to keep only the "
        "hash in the file; none = auth off (warned at start-up)"))
    log_url: str = Field("sqlite:///router_outcomes.db", description=(
        "outcome log: a path, `sqlite:///file.db` or `postgresql://user@host/db`"))
    log_batch_size: int = Field(256, description="rows per outcome-log transaction")
    log_flush_interval_s: float = Field(0.2, description=(
        "longest wait before a partial batch is written (bounds what a crash loses)"))
    cache_url: str | None = Field(None, description=(
        "response cache: unset = in-process memory, `redis://host:6379/0` = shared by "
        "replicas"))
    cache_ttl_s: float = Field(3600.0, description=(
        "cache entry lifetime in seconds; 0 turns the cache off (only deterministic requests "
        "are cached: `temperature` 0, `n` 1)"))
    semantic_cache: bool = Field(False, description=(
        "also answer a cacheable prompt that differs from a cached one only in case, "
        "punctuation, whitespace, a greeting or one typo (`x-router-cache: semantic`)"))
    decision_cache_size: int = Field(10_000, description=(
        "routing decisions remembered per model (by conversation and limits) so a repeated "
        "prompt skips prediction; 0 turns it off"))
    privacy_mode: bool = Field(False, description=(
        "log only the conversation hash, never its text"))
    max_body_bytes: int = Field(1_048_576, description="larger request bodies get 413")
    max_messages: int = Field(256, description="more messages in one request get 400")
    upstream_connect_timeout_s: float = Field(5.0, description=(
        "connect timeout per upstream attempt, seconds"))
    upstream_read_timeout_s: float = Field(120.0, description=(
        "longest silence from an upstream before the attempt times out, seconds"))
    upstream_max_connections: int = Field(512, description=(
        "connection pool size of the one shared HTTP client"))
    upstream_max_keepalive: int = Field(128, description=(
        "idle keep-alive connections kept in the pool"))
    upstream_transport: Literal["aiohttp", "httpx"] = Field("aiohttp", description=(
        "HTTP client under the upstream calls: `aiohttp` (aiohttp's client) or `httpx` "
        "(httpx's own transport: far more CPU per stream beyond a few dozen concurrent "
        "streams); both honour HTTPS_PROXY / NO_PROXY and verify TLS"))
    max_retries: int = Field(1, description=(
        "retries of the same model on 429/5xx/connect errors before falling back"))
    backoff_s: float = Field(0.25, description=(
        "first retry backoff in seconds (doubles; a short `Retry-After` wins)"))
    max_retry_after_s: float = Field(5.0, description=(
        "longest `Retry-After` honoured by waiting; longer ones cool the model down"))
    cooldown_failures: int = Field(3, description=(
        "consecutive failures that open a model's circuit breaker"))
    cooldown_s: float = Field(30.0, description=(
        "how long an open breaker skips the model before one trial request"))
    cooldown_sync_url: str | None = Field(None, description=(
        "`redis://host:6379/0` where replicas share open circuit breakers and live latency "
        "(read every second), so a failing or slowing provider is skipped by all of them at "
        "once; unset = each replica learns on its own"))
    reload_interval_s: float = Field(5.0, description=(
        "seconds between checks for a new model version; 0 = never"))
    gc_freeze: bool = Field(True, description=(
        "after start-up and after each model reload, exempt the live heap (the model, "
        "libraries) from Python's cyclic garbage collector (`gc.freeze`), so a full "
        "collection scans only what requests allocate instead of pausing every request "
        "for the whole heap"))
    shutdown_grace_s: float = Field(30.0, description=(
        "on SIGTERM, seconds `router serve` lets running requests finish; streams still "
        "running 1 s before the end get an SSE error event and are logged as 503"))
    host: str = Field("127.0.0.1", description="address `router serve` binds")
    port: int = Field(8000, description="port `router serve` binds")
    workers: int = Field(1, description=(
        "`router serve` processes sharing the port, each with the whole app (model, pools, "
        "hot reload); `/metrics` on any of them adds up all"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    # -- validators: each message names the variable a user would set ------------------

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"not a valid JSON list ({exc})") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            raw = key.get_secret_value()
            if raw.startswith(_HASHED_PREFIX):
                digest = raw[len(_HASHED_PREFIX):]
                if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                    raise ValueError("a hashed key must be 'sha256:' followed by 64 hex digits")
            elif len(raw) < 8:
                raise ValueError("client keys must be at least 8 characters")
        return keys

    @field_validator("default_quality_bar")
    @classmethod
    def _unit_interval(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"must be in [0, 1], got {value!r}")
        return value

    @field_validator("max_latency_ms")
    @classmethod
    def _latency_limit(cls, value: float | None) -> float | None:
        if value is not None and not (0 < value < float("inf")):
            raise ValueError(f"must be a finite number of milliseconds > 0, got {value!r}")
        return value

    @field_validator("exploration")
    @classmethod
    def _exploration(cls, value: float) -> float:
        if not 0.0 <= value <= 0.5:
            raise ValueError(f"must be in [0, 0.5] (a share of traffic), got {value!r}")
        return value

    @field_validator("upstream_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("cache_url", "cooldown_sync_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, "", "memory", "memory://"):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be a redis:// URL (or empty for in-process), got {value!r}")
        return value

    @field_validator("max_body_bytes", "max_messages", "upstream_max_connections",
                     "upstream_max_keepalive", "cooldown_failures", "log_batch_size",
                     "workers")
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a positive integer, got {value!r}")
        return value

    @field_validator("upstream_connect_timeout_s", "upstream_read_timeout_s",
                     "log_flush_interval_s", "shutdown_grace_s")
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be a positive number of seconds, got {value!r}")
        return value

    @field_validator("cache_ttl_s", "backoff_s", "max_retry_after_s", "cooldown_s",
                     "reload_interval_s", "max_retries", "decision_cache_size")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value!r}")
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"must be a TCP port in [0, 65535], got {value!r}")
        return value

    @model_validator(mode="after")
    def _upstream_is_safe(self) -> Settings:
        url = self.upstream_base_url
        if url is None:
            if self.upstream_api_key is not None:
                raise ValueError("upstream_api_key: it is only sent to upstream_base_url, "
                                 "which is unset; set both or neither")
            return self
        host = urlsplit(url).hostname or ""
        if url.startswith("http://") and not self.upstream_allow_http and not _loopback(host):
            raise ValueError(
                f"upstream_base_url: {url} is plain http to {host}, so every prompt, answer "
                f"and key would cross the network unencrypted; use https://, a loopback host, "
                f"or set {ENV_PREFIX}UPSTREAM_ALLOW_HTTP=1 if that network is trusted")
        return self

    @model_validator(mode="after")
    def _paths_exist(self) -> Settings:
        for name in ("model_dir", "registry_dir", "catalog"):
            path = getattr(self, name)
            if path is None:
                continue
            wanted_dir = name != "catalog"
            if wanted_dir and not path.is_dir():
                raise ValueError(f"{name}: {path} is not a folder")
            if not wanted_dir and not path.is_file():
                raise ValueError(f"{name}: {path} does not exist")
        return self

    # -- derived ------------------------------------------------------------------------

    @property
    def api_key_digests(self) -> tuple[bytes, ...]:
        """sha256 digests of the configured client keys (hashed ones taken as given)."""
        digests = []
        for key in self.api_keys:
            raw = key.get_secret_value()
            if raw.startswith(_HASHED_PREFIX):
                digests.append(bytes.fromhex(raw[len(_HASHED_PREFIX):]))
            else:
                digests.append(key_digest(raw))
        return tuple(digests)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_key(presented: str, digests: tuple[bytes, ...]) -> bytes | None:
    """The digest `presented` matches, compared in constant time, or None."""
    candidate = key_digest(presented)
    match = None
    for digest in digests:
        # No early exit: the time taken does not depend on which key matched.
        if hmac.compare_digest(candidate, digest):
            match = digest
    return match


# Fields checked by a model validator, whose messages start with "<field>:".
_CHECKED_TOGETHER = {"model_dir", "registry_dir", "catalog", "upstream_base_url",
                     "upstream_api_key"}


def _explain(exc: ValidationError, source: str) -> ConfigError:
    """One readable error for the first problem, naming the variable to change."""
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
        field = loc[0] if loc else ""
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if not field and ":" in message and message.split(":", 1)[0] in _CHECKED_TOGETHER:
            field, message = message.split(":", 1)
            message = message.strip()
        value = error.get("input")
        shown = ("" if field == "api_keys" or isinstance(value, dict) or "got " in message
                 else f" (got {value!r})")
        if error.get("type") == "extra_forbidden":
            problems.append(f"unknown option {field!r}")
            continue
        problems.append(f"{ENV_PREFIX}{field.upper()}: {message}{shown}")
    known = ", ".join(sorted(Settings.model_fields))
    return ConfigError(
        "invalid settings" + (f" in {source}" if source else "") + ": " + "; ".join(problems),
        hint=f"fix the environment variable or the TOML key; known options: {known}",
    )


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from `overrides` > `ROUTER_*` env > TOML (`config` or `$ROUTER_CONFIG`).

    `overrides` whose value is None are ignored, so CLI flags can be passed
    through as they are. Raises `ConfigError` for a missing file or a bad value.
    """
    path = config or os.environ.get(CONFIG_ENV_VAR) or None
    cls: type[Settings] = Settings
    if path is not None:
        resolved = Path(path)
        if not resolved.is_file():
            raise ConfigError(f"config file not found: {resolved}",
                              hint=f"pass an existing TOML file with --config or {CONFIG_ENV_VAR}")
        import tomllib

        try:
            tomllib.loads(resolved.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{resolved}: not valid TOML: {exc}") from None
        cls = type("Settings", (Settings,),
                   {"model_config": {**Settings.model_config, "toml_file": resolved},
                    "__module__": __name__})
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        raise _explain(exc, str(path) if path else "") from None


def options_table() -> str:
    """Every option as a Markdown table: env variable, TOML key, default, meaning."""
    lines = ["| env variable | TOML key | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = "[]" if info.default_factory is not None else repr(info.default)
        default = "unset" if default == "None" else default
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{name}` | `{default}` | "
                     f"{info.description or ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_table())
