"""The LiteVAE encoder: the paper's structure, parameter counts and output shapes."""

import pytest
import torch

from diffusers_litevae import ENCODER_PRESETS, LiteVAEEncoder, encoder_preset

# LiteVAE paper (arXiv 2405.14477) Table 6, at 4 latent channels.
PAPER_ENCODER_PARAMS = {"S": 1.03e6, "B": 6.75e6, "M": 32.75e6, "L": 41.42e6}


def _encoder(name: str, latent_channels: int = 4) -> LiteVAEEncoder:
    return LiteVAEEncoder.from_preset(name, latent_channels=latent_channels)


@pytest.mark.parametrize("name", ["S", "B", "M", "L"])
def test_parameter_counts_match_paper_within_one_percent(name):
    count = sum(p.numel() for p in _encoder(name).parameters())
    assert abs(count - PAPER_ENCODER_PARAMS[name]) / PAPER_ENCODER_PARAMS[name] < 0.01, count


def test_preset_lookup():
    assert set(ENCODER_PRESETS) == {"S", "B", "M", "L"}
    assert encoder_preset("b") is ENCODER_PRESETS["B"]
    with pytest.raises(ValueError, match="choose one of"):
        encoder_preset("XL")


@pytest.mark.parametrize("latent_channels", [4, 16])
def test_output_is_moments_on_the_latent_grid(latent_channels):
    encoder = _encoder("S", latent_channels)
    moments = encoder(torch.randn(2, 3, 64, 96))
    assert moments.shape == (2, 2 * latent_channels, 8, 12)
    assert torch.isfinite(moments).all()


def test_all_wavelet_levels_reach_the_output():
    """Each level's UNet feeds the aggregation: perturbing only a fine detail changes the latents."""
    encoder = _encoder("S").eval()
    x = torch.zeros(1, 3, 32, 32)
    bump = x.clone()
    bump[..., 0, 1] = 1.0  # a one-pixel detail: lives in the level-1 high-frequency bands
    with torch.no_grad():
        assert not torch.allclose(encoder(x), encoder(bump))


def test_widths_and_depth_configurable():
    small = LiteVAEEncoder(
        feature_channels=8,
        feature_channel_mults=(1,),
        aggregation_channels=8,
        aggregation_channel_mults=(1, 2),
        layers_per_block=1,
        norm_num_groups=4,
    )
    deeper = LiteVAEEncoder(
        feature_channels=8,
        feature_channel_mults=(1,),
        aggregation_channels=8,
        aggregation_channel_mults=(1, 2),
        layers_per_block=3,
        norm_num_groups=4,
    )
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in small.parameters())
    two_level = LiteVAEEncoder(wavelet_levels=2, feature_channels=8, aggregation_channels=8, norm_num_groups=4)
    assert two_level(torch.randn(1, 3, 16, 16)).shape == (1, 8, 4, 4)
