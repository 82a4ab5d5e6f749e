"""Errors shared by every variant configuration."""

from __future__ import annotations


class ConfigError(ValueError):
    """A variant configuration that cannot run."""


class RefusedOnDevice(ConfigError):
    """A valid variant that must not launch on this GPU: Triton mis-compiles it there (faults or wrong
    values seen on the GPU), so the call is refused before anything runs. Its message starts ``config:``."""
