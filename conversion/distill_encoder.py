#!/usr/bin/env python
"""Distil a LiteVAE encoder against a frozen teacher VAE (the same as ``litevae distill``).

Examples:

    python conversion/distill_encoder.py --teacher stabilityai/sd-vae-ft-mse --train_data_dir photos/ \
        --student B --resolution_schedule 128:20000,256/384/512:27000,512 --crop_scales 0.25,1 \
        --mixed_precision bf16 --output_dir litevae-b-sd

    accelerate launch --num_processes 8 conversion/distill_encoder.py --teacher ... (same flags)

Every flag is documented by ``--help`` and in docs/distillation.md; the work is done by
:func:`diffusers_litevae.training.distill`.
"""

from __future__ import annotations

import sys

from diffusers_litevae.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
