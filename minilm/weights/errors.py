"""WeightsError: a checkpoint is missing, corrupt or does not fit; its message says how to fix it."""

from __future__ import annotations


class WeightsError(Exception):
    """A checkpoint is missing, corrupt or does not fit the encoder. The message says how to fix it."""
