"""The exception types training raises for bad user input."""

from __future__ import annotations

__all__ = ["TrainingInputError"]


class TrainingInputError(ValueError):
    """A problem with the user's settings or data, found before training starts: one line naming the problem and the
    fix, which ``litevae distill`` and ``litevae train`` print without a traceback."""
