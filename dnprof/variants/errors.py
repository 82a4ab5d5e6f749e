"""Errors shared by every variant configuration."""

from __future__ import annotations


class ConfigError(ValueError):
    """A variant configuration that cannot run."""
