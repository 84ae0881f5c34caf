"""The one exception type distillation raises for bad user input."""

from __future__ import annotations

__all__ = ["DistillationInputError"]


class DistillationInputError(ValueError):
    """A problem with the user's settings, data or teacher, found before training starts.

    The message is one line naming the problem and the fix; ``litevae distill`` prints it without a traceback.
    """
