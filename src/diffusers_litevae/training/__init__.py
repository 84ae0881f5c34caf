"""Training: distil a LiteVAE encoder against a frozen teacher VAE (``litevae distill``: :class:`DistillConfig`,
:func:`distill`), or train a whole LiteVAE from scratch with the paper's recipe (``litevae train``:
:class:`TrainConfig`, :func:`train_autoencoder`); the teachers, losses, data, validation and checkpoints they use are
importable too (see ``docs/distillation.md`` and ``docs/training.md``).
"""

from ..image_io import find_images
from .checkpointing import find_latest_checkpoint, load_checkpoint, resolve_resume, save_checkpoint
from .data import (
    RandomCropDataset,
    ResolutionSchedule,
    StepIndexedBatchSampler,
    collate_batch,
    load_eval_image,
    random_crop_flip,
    split_holdout,
)
from .distillation import DistillConfig, compute_distillation_loss, distill, distill_step, validate_config
from .errors import TrainingInputError
from .from_scratch import (
    AutoencoderLoss,
    TrainConfig,
    autoencoder_step,
    build_autoencoder,
    train_autoencoder,
    validate_train_config,
)
from .losses import (
    DistillationLoss,
    LossWeights,
    charbonnier,
    discriminator_hinge_loss,
    gaussian_blur,
    gaussian_filtered_loss,
    generator_adversarial_loss,
    kl_to_standard_normal,
    latent_scaling,
    load_lpips,
    wavelet_loss,
)
from .teachers import (
    TEACHER_TYPES,
    DiffusersVAETeacher,
    DistillationTeacher,
    load_teacher,
    wrap_teacher,
)
from .validation import compute_teacher_reference, evaluate_autoencoder, plot_curve, save_reconstruction_grid

__all__ = [
    "TEACHER_TYPES",
    "AutoencoderLoss",
    "TrainConfig",
    "TrainingInputError",
    "autoencoder_step",
    "build_autoencoder",
    "evaluate_autoencoder",
    "train_autoencoder",
    "validate_train_config",
    "DiffusersVAETeacher",
    "DistillConfig",
    "RandomCropDataset",
    "DistillationLoss",
    "DistillationTeacher",
    "LossWeights",
    "ResolutionSchedule",
    "StepIndexedBatchSampler",
    "charbonnier",
    "collate_batch",
    "compute_distillation_loss",
    "compute_teacher_reference",
    "discriminator_hinge_loss",
    "distill",
    "distill_step",
    "find_images",
    "find_latest_checkpoint",
    "gaussian_blur",
    "gaussian_filtered_loss",
    "generator_adversarial_loss",
    "kl_to_standard_normal",
    "latent_scaling",
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
    "validate_config",
    "wavelet_loss",
    "wrap_teacher",
]
