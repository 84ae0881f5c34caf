"""The input-error type of ``litevae eval``."""

__all__ = ["EvaluationInputError"]


class EvaluationInputError(ValueError):
    """Bad input to an evaluation (settings, image folder, dataset, a model that cannot be evaluated):
    ``litevae eval`` prints it as one ``error:`` line (exit code 2); anything else propagates with its traceback."""
