"""Helpers of the model classes: config list/tuple normalisation and diffusers' Gaussian with lazy ``std``."""

from __future__ import annotations

from functools import cached_property

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

__all__ = ["LazyDiagonalGaussian", "normalize_sequences"]


def normalize_sequences(value, kind: type = tuple):
    """``value`` with every list and tuple in it, at any depth, made a ``kind``; other values unchanged.

    A config read back from JSON holds lists where one built in Python holds tuples: normalised to tuples they
    compare equal, and normalised to lists they serialise like JSON (``json.dumps`` writes either as a list).
    """
    if isinstance(value, (list, tuple)):
        return kind(normalize_sequences(v, kind) for v in value)
    return value


class LazyDiagonalGaussian(DiagonalGaussianDistribution):
    """diffusers' ``DiagonalGaussianDistribution`` that computes ``std`` and ``var`` on first use.

    Same values, attributes and methods (a subclass, so ``isinstance`` checks hold). Most callers read only
    ``mean``/``mode()`` or ``logvar`` (latent caching, distillation, pipelines' ``argmax`` mode), and for them the
    three element-wise kernels building ``std`` and ``var`` were wasted launches.
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic

    # cached_property: computed on first read, and assignable like diffusers' plain attributes.
    @cached_property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean) if self.deterministic else torch.exp(0.5 * self.logvar)

    @cached_property
    def var(self) -> torch.Tensor:
        return torch.zeros_like(self.mean) if self.deterministic else torch.exp(self.logvar)
