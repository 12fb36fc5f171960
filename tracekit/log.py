"""The package logger. Library code logs through :data:`logger`; only the CLI prints."""

from __future__ import annotations

import logging

logger = logging.getLogger("tracekit")


def get_logger(name: str) -> logging.Logger:
    """A child of the ``tracekit`` logger, e.g. ``get_logger(__name__)``."""
    if name.startswith("tracekit"):
        return logging.getLogger(name)
    return logger.getChild(name)
