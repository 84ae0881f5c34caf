"""Encoder distillation: train a LiteVAE encoder against a frozen teacher VAE (``litevae distill``).

Importable pieces (see ``docs/distillation.md``):

- teachers: :func:`load_teacher`, :func:`wrap_teacher`, :class:`DistillationTeacher` and its adapters;
- losses: :class:`DistillationLoss`, :class:`LossWeights`, :func:`wavelet_loss`, :func:`gaussian_filtered_loss`;
- data: :func:`find_images`, :class:`ResolutionSchedule`, :class:`StepIndexedBatchSampler`,
  :class:`DistillationDataset`;
- training: :class:`DistillConfig`, :func:`distill_step`, :func:`distill`;
- validation and checkpoints: :func:`evaluate_student`, :func:`save_checkpoint`, :func:`resolve_resume`.
"""

from .checkpointing import find_latest_checkpoint, load_checkpoint, resolve_resume, save_checkpoint
from .data import (
    DistillationDataset,
    FolderImageSource,
    HubImageSource,
    ResolutionSchedule,
    StepIndexedBatchSampler,
    collate_batch,
    find_images,
    load_eval_image,
    random_crop_flip,
    split_holdout,
)
from .errors import DistillationInputError
from .losses import (
    DistillationLoss,
    LossWeights,
    charbonnier,
    gaussian_blur,
    gaussian_filtered_loss,
    load_lpips,
    wavelet_loss,
)
from .teachers import (
    TEACHER_TYPES,
    DiffusersVAETeacher,
    DistillationTeacher,
    TinyCheckpointTeacher,
    load_teacher,
    tiny_decoder_from_decoder_tiny,
    wrap_teacher,
)
from .trainer import DistillConfig, compute_distillation_loss, distill, distill_step, validate_config
from .validation import compute_teacher_reference, evaluate_student, plot_curve, save_reconstruction_grid

__all__ = [
    "TEACHER_TYPES",
    "DiffusersVAETeacher",
    "DistillConfig",
    "DistillationDataset",
    "DistillationInputError",
    "DistillationLoss",
    "DistillationTeacher",
    "FolderImageSource",
    "HubImageSource",
    "LossWeights",
    "ResolutionSchedule",
    "StepIndexedBatchSampler",
    "TinyCheckpointTeacher",
    "charbonnier",
    "collate_batch",
    "compute_distillation_loss",
    "compute_teacher_reference",
    "distill",
    "distill_step",
    "evaluate_student",
    "find_images",
    "find_latest_checkpoint",
    "gaussian_blur",
    "gaussian_filtered_loss",
    "load_checkpoint",
    "load_eval_image",
    "load_lpips",
    "load_teacher",
    "plot_curve",
    "random_crop_flip",
    "resolve_resume",
    "save_checkpoint",
    "save_reconstruction_grid",
    "split_holdout",
    "tiny_decoder_from_decoder_tiny",
    "validate_config",
    "wavelet_loss",
    "wrap_teacher",
]
