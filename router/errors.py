"""The error tree. Every message is written for the person who has to fix it.

`RouterError.hint` says what to do; the CLI prints `error: <message>` and, when
there is one, `hint: <hint>`; the HTTP layer maps errors to OpenAI-shaped JSON.
"""

from __future__ import annotations

__all__ = [
    "RouterError",
    "ConfigError",
    "DataError",
    "ArtifactError",
    "PolicyError",
    "NotFittedError",
]


class RouterError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(RouterError):
    """A catalog, settings value or command-line option is invalid."""


class DataError(RouterError):
    """An outcome table or request body cannot be used; names file, row and fix."""


class ArtifactError(RouterError):
    """A trained model folder is missing, corrupt or from an incompatible version."""


class PolicyError(RouterError):
    """A routing request asks for something impossible (bad bar, unknown model)."""


class NotFittedError(RouterError):
    """An estimator was used before `fit` (or `load`)."""
