"""Building blocks for training a whole LiteVAE from scratch: the U-Net discriminator and the loss terms that
distillation does not use (KL to N(0, I), the hinge GAN losses) plus the latent scaling set after training.

Each loss is checked against an independent reference computation on fixed tensors.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffusers_litevae.models import UNetDiscriminator
from diffusers_litevae.training import (
    discriminator_hinge_loss,
    generator_adversarial_loss,
    kl_to_standard_normal,
    latent_scaling,
)


def test_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 4, 3, 3, generator=generator)
    logvar = torch.randn(2, 4, 3, 3, generator=generator)
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean()
    assert torch.allclose(kl_to_standard_normal(mean, logvar), reference, atol=1e-6)
    assert float(kl_to_standard_normal(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))) == 0.0


def test_hinge_losses_on_fixed_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1
    assert float(discriminator_hinge_loss(real, fake)) == pytest.approx(5 / 6 + 1)
    assert float(generator_adversarial_loss(fake)) == pytest.approx(1 / 3)


def test_latent_scaling_gives_unit_variance_and_optional_shift():
    latents = 3.0 + 2.0 * torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    scale, shift = latent_scaling(latents)
    assert shift is None and scale == pytest.approx(0.5, rel=0.02)
    scale, shift = latent_scaling(latents, with_shift=True)
    normalized = (latents - shift) * scale
    assert float(normalized.mean()) == pytest.approx(0.0, abs=1e-4) and float(normalized.std()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no spread"):
        latent_scaling(torch.ones(2, 4, 2, 2))


def tiny_discriminator() -> UNetDiscriminator:
    torch.manual_seed(0)
    return UNetDiscriminator(block_out_channels=(8, 16))


def test_discriminator_scores_every_pixel_and_round_trips(tmp_path):
    discriminator = tiny_discriminator().eval()
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    logits = discriminator(images)
    assert logits.shape == (2, 1, 32, 48)
    # A local change moves the logits near it more than far from it: the map is per pixel, not one global score.
    changed = images.clone()
    changed[:, :, :8, :8] = 1.0
    difference = (discriminator(changed) - logits).abs()
    assert difference[..., :8, :8].mean() > 3 * difference[..., 24:, 32:].mean()
    discriminator.save_pretrained(tmp_path)
    reloaded = UNetDiscriminator.from_pretrained(tmp_path).eval()
    assert torch.allclose(reloaded(images), logits, atol=1e-6)


def test_discriminator_rejects_bad_input():
    discriminator = tiny_discriminator()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        discriminator(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        discriminator(torch.zeros(1, 3, 30, 32))


def test_discriminator_learns_to_tell_smooth_images_from_noise():
    """A few hinge-loss steps separate real (smooth) from fake (noisy) images: the loss falls and the maps agree."""
    discriminator = tiny_discriminator()
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(0)

    def batch():
        smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4, generator=generator), size=32, mode="bilinear")
        return smooth * 2 - 1, torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1

    losses = []
    for _ in range(40):
        real, fake = batch()
        loss = discriminator_hinge_loss(discriminator(real), discriminator(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[0] > 1.5 and sum(losses[-5:]) / 5 < 0.5 * losses[0]
    real, fake = batch()
    with torch.no_grad():
        assert float(discriminator(real).mean()) > float(discriminator(fake).mean())
