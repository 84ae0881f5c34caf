"""The exception types training raises for bad user input."""

from __future__ import annotations

__all__ = ["TrainingInputError"]


class TrainingInputError(ValueError):
    """A problem with the user's settings or data, found before training starts.

    The message is one line naming the problem and the fix; ``litevae distill`` and ``litevae train`` print it
    without a traceback.
    """
