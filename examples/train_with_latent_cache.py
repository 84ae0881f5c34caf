"""Train a small diffusion UNet on a latent cache: the loop that ``litevae cache-latents`` exists for.

Build a cache first, then train on it (runs on CPU in seconds with a tiny UNet)::

    litevae cache-latents --train_data_dir ./photos --vae ./my-litevae --output_dir ./cache --resolution 256
    python examples/train_with_latent_cache.py --cache_dir ./cache --max_train_steps 50

What it shows: :class:`~diffusers_litevae.caching.LatentDataset` yields latents already shifted/scaled for the
diffusion model, drawn fresh from the cached posterior (mean + std * noise) each epoch, with the caption and
SDXL-style size conditioning of the same sample; :class:`~diffusers_litevae.caching.BucketBatchSampler` makes
every batch one bucket, so latents of different aspect ratios never need padding. The UNet here is unconditional
(``UNet2DModel``) to stay tiny; a text-to-image script feeds ``batch["caption"]`` to its text encoder and
``original_size``/``crop_top_left``/``target_size`` to SDXL's ``add_time_ids``.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from diffusers_litevae.caching import BucketBatchSampler, LatentDataset, load_manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", required=True, help="a folder written by `litevae cache-latents`")
    parser.add_argument("--max_train_steps", type=int, default=100)
    parser.add_argument("--train_batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--lr_scheduler", default="constant_with_warmup")
    parser.add_argument("--lr_warmup_steps", type=int, default=10)
    parser.add_argument(
        "--unet_channels",
        type=int,
        nargs="+",
        default=[32, 64],
        help="UNet widths; latent sides must be divisible by 2**(len-1)",
    )
    parser.add_argument(
        "--flip_probability",
        type=float,
        default=0.5,
        help="chance of a flipped latent (used only if the cache stores them)",
    )
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[float]:
    """Train and return the per-step losses."""
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    torch.manual_seed(args.seed)

    # Noise from (seed, epoch, index): reproducible and different in every DataLoader worker.
    manifest = load_manifest(args.cache_dir)
    if manifest is None:
        raise SystemExit(f"{args.cache_dir} is not a latent cache: build it with `litevae cache-latents` first.")
    has_flipped = "mean_flipped" in manifest["latents"]["tensors"]
    dataset = LatentDataset(
        args.cache_dir,
        latent_sampling="sample",
        seed=args.seed,
        flip_probability=args.flip_probability if has_flipped else 0.0,
    )
    sampler = BucketBatchSampler(dataset, batch_size=args.train_batch_size, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.dataloader_num_workers)

    latent_channels = dataset.manifest["latents"]["channels"]
    levels = len(args.unet_channels)
    unet = UNet2DModel(
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(args.unet_channels),
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        layers_per_block=1,
        norm_num_groups=8,
    )
    divisor = 2 ** (levels - 1)
    bad = sorted(
        {
            tuple(b)
            for b in dataset.buckets.tolist()
            if (b[0] // dataset.manifest["latents"]["downsample_factor"]) % divisor
            or (b[1] // dataset.manifest["latents"]["downsample_factor"]) % divisor
        }
    )
    if bad:
        raise ValueError(
            f"buckets {bad} give latent sides not divisible by {divisor}: use fewer --unet_channels "
            "or cache with a larger --bucket_step."
        )
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate)
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps
    )
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)

    losses: list[float] = []
    progress = tqdm(total=args.max_train_steps, desc="training", disable=not accelerator.is_main_process)
    epochs = math.ceil(args.max_train_steps / max(len(loader), 1))
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # new batch order
        dataset.set_epoch(epoch)  # new posterior samples and flips
        for batch in loader:
            latents = batch["latents"]  # already (latent - shift_factor) * scaling_factor
            if epoch == 0 and not losses:
                accelerator.print(
                    f"first batch: {tuple(latents.shape)}, ids {batch['sample_id'][:2]}, "
                    f"captions {batch['caption'][:2]}"
                )
            noise = torch.randn_like(latents)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
            )
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            with accelerator.accumulate(unet):
                prediction = unet(noisy, timesteps).sample
                loss = F.mse_loss(prediction.float(), noise.float())
                accelerator.backward(loss)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.item())
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
            if len(losses) >= args.max_train_steps:
                break
        if len(losses) >= args.max_train_steps:
            break
    progress.close()
    accelerator.print(f"trained {len(losses)} steps; loss first {losses[0]:.4f}, last {losses[-1]:.4f}")
    return losses


if __name__ == "__main__":
    main()
