"""The LiteVAE encoder: the paper's structure, parameter counts and output shapes."""

import pytest
import torch

from diffusers_litevae import ENCODER_PRESETS, AutoencoderLite, LiteVAEEncoder, encoder_preset, pretrained_path
from diffusers_litevae.models.litevae_encoder import preset_name_of

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


def test_preset_config_keys_round_trip():
    """A preset's encoder_* keys build that preset in AutoencoderLite, and a saved config (lists, as JSON stores
    tuples) names its preset back; widths of no preset name none."""
    for name, preset in ENCODER_PRESETS.items():
        keys = preset.config_kwargs()
        assert keys["encoder_feature_channels"] == preset.feature_channels and len(keys) == 4
        saved = {key: list(value) if isinstance(value, tuple) else value for key, value in keys.items()}
        assert preset_name_of({**saved, "latent_channels": 4}) == name
    assert preset_name_of({**ENCODER_PRESETS["B"].config_kwargs(), "encoder_feature_channels": 48}) is None
    assert preset_name_of({}) is None
    assert preset_name_of(AutoencoderLite.load_config(pretrained_path("litevae-s-taef2"))) == "S"  # a saved config


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


# ---------------------------------------------------------------------------------------------- the eager fast path


def _reference_haar_levels(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The previous front end, kept as the reference: slicing + butterfly per level, chained through LL."""
    out, low = [], x
    for _ in range(levels):
        a, b = low[..., 0::2, 0::2], low[..., 0::2, 1::2]
        c, d = low[..., 1::2, 0::2], low[..., 1::2, 1::2]
        top, bottom, top_diff, bottom_diff = a + b, c + d, a - b, c - d
        bands = torch.cat([top + bottom, top - bottom, top_diff + bottom_diff, top_diff - bottom_diff], dim=1) * 0.5
        out.append(bands)
        low = bands[:, : x.shape[1]]
    return out


def _reference_encoder_forward(encoder: LiteVAEEncoder, x: torch.Tensor) -> torch.Tensor:
    """The previous implementation: diffusers' ResnetBlock2D (loaded strictly from each block's state dict, so
    the parameter names must match), bands scaled by 1/2**l after the transform."""
    from diffusers.models.resnet import ResnetBlock2D

    def diffusers_block(block):
        reference = ResnetBlock2D(
            in_channels=block.in_channels,
            out_channels=block.out_channels,
            temb_channels=None,
            groups=block.norm1.num_groups,
            groups_out=block.norm2.num_groups,
            eps=1e-6,
            non_linearity="silu",
        ).to(dtype=block.conv1.weight.dtype)
        reference.load_state_dict(block.state_dict(), strict=True)
        return reference.eval()

    def unet_forward(unet, sample):
        hidden, skips = unet.conv_in(sample), []
        for block in unet.down_blocks:
            hidden = diffusers_block(block)(hidden, None)
            skips.append(hidden)
        for block in unet.mid_blocks:
            hidden = diffusers_block(block)(hidden, None)
        for block in unet.up_blocks:
            hidden = diffusers_block(block)(torch.cat([hidden, skips.pop()], dim=1), None)
        return unet.conv_out(hidden)

    features = []
    levels = encoder.wavelet_levels
    for level, bands in enumerate(_reference_haar_levels(x, levels), start=1):
        feature = unet_forward(encoder.feature_unets[level - 1], bands * 0.5**level)
        if levels - level:
            feature = torch.nn.functional.avg_pool2d(feature, 2 ** (levels - level))
        features.append(feature)
    return unet_forward(encoder.aggregation_unet, torch.cat(features, dim=1))


def _test_images() -> torch.Tensor:
    from diffusers_litevae.testing_utils import smooth_images

    noise = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return torch.cat([smooth_images(1, 64, 96, seed=1), noise])


def test_bundled_model_outputs_match_the_previous_implementation():
    """Same math as the diffusers-ResnetBlock2D encoder with the slicing Haar front end, on the shipped weights:
    identical in float64, and within float32 rounding (1e-5 on the posterior) in float32."""
    from diffusers_litevae import AutoencoderLite, pretrained_path

    vae = AutoencoderLite.from_pretrained(pretrained_path("litevae-s-taef2"), torch_dtype=torch.float32).eval()
    images = _test_images()
    with torch.no_grad():
        moments, reference = vae.encoder(images), _reference_encoder_forward(vae.encoder, images)
        posterior = vae.encode(images).latent_dist
        ref_logvar = reference.chunk(2, dim=1)[1].clamp(-30.0, 20.0)
        torch.testing.assert_close(posterior.mean, reference.chunk(2, dim=1)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(posterior.std, torch.exp(0.5 * ref_logvar), atol=1e-5, rtol=0)
        # Raw log-variances reach |35| here: 1e-5 plus 1e-6 relative is a few float32 ulps at that size.
        torch.testing.assert_close(moments, reference, atol=1e-5, rtol=1e-6)
        encoder64 = vae.encoder.double()
        torch.testing.assert_close(
            encoder64(images.double()), _reference_encoder_forward(encoder64, images.double()), atol=1e-12, rtol=0
        )


def test_random_b_outputs_match_the_previous_implementation():
    torch.manual_seed(7)
    encoder = _encoder("B").eval()
    images = _test_images()[:, :, :32, :48]
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), _reference_encoder_forward(encoder, images), atol=1e-5, rtol=0)


def test_state_dict_keys_are_the_diffusers_resnet_layout():
    """Saved models and the bundled weights load unchanged: no new keys (the Haar filters are not saved)."""
    keys = set(_encoder("S").state_dict())
    assert "feature_unets.0.down_blocks.0.norm1.weight" in keys
    assert "aggregation_unet.up_blocks.0.conv_shortcut.weight" in keys
    assert not [key for key in keys if "haar" in key]


def test_b_encode_op_count_stays_within_its_bound():
    """Every aten op is a kernel launch in eager mode on a GPU: B's encode at 64 px had 580 before the fused
    front end and the plain ResBlock (the divides by 1 and the 57-op slicing Haar are gone). Deterministic."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from op_counts import encode_op_counts

    counts = encode_op_counts("B", resolution=64)
    assert sum(counts.values()) <= 464, counts
    assert "div" not in counts and "slice" not in counts and "mul" not in counts, counts
    assert counts["convolution"] == 155 and counts["native_group_norm"] == 112, counts
