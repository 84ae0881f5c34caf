"""The Haar transform is the encoder's front end: it must be the exact orthonormal 2D Haar DWT."""

import numpy as np
import pytest
import pywt
import torch

from diffusers_litevae.transforms import haar_dwt, haar_idwt, haar_wavedec, haar_waverec


def _pywt_bands(x: torch.Tensor, levels: int) -> list[list[np.ndarray]]:
    """PyWavelets' coefficients regrouped finest level first: [[cA_l, cH_l, cV_l, cD_l], ...]."""
    coeffs = pywt.wavedec2(x.numpy(), "haar", level=levels, axes=(-2, -1))
    grouped, approx = [], None
    for level in range(1, levels + 1):
        details = coeffs[levels - level + 1]
        # LL of level l is the level-l approximation: recompute it with a one-level pywt call for finer levels.
        approx = pywt.wavedec2(x.numpy(), "haar", level=level, axes=(-2, -1))[0]
        grouped.append([approx, *details])
    return grouped


@pytest.mark.parametrize("shape", [(2, 3, 64, 48), (1, 1, 8, 8), (3, 5, 32, 96)])
def test_three_level_forward_matches_pywavelets(shape):
    x = torch.randn(*shape)
    ours = haar_wavedec(x, levels=3)
    reference = _pywt_bands(x, levels=3)
    channels = shape[1]
    for level, (bands, ref) in enumerate(zip(ours, reference), start=1):
        assert bands.shape == (shape[0], 4 * channels, shape[2] // 2**level, shape[3] // 2**level)
        for k, ref_band in enumerate(ref):  # LL, LH (cH), HL (cV), HH (cD)
            np.testing.assert_allclose(bands[:, k * channels : (k + 1) * channels].numpy(), ref_band, atol=1e-5)


def test_inverse_reconstructs_exactly():
    x = torch.randn(2, 3, 64, 40)
    assert torch.allclose(haar_idwt(haar_dwt(x)), x, atol=1e-5)
    assert torch.allclose(haar_waverec(haar_wavedec(x, 3)), x, atol=1e-5)


def test_orthonormal_energy_preserved():
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(haar_dwt(x).square().sum(), x.square().sum())


def test_gradients_pass_gradcheck():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: haar_wavedec(t, 3)[-1], (x,))
    bands = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(haar_idwt, (bands,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_and_memory_format_preserved(dtype):
    x = torch.randn(2, 3, 16, 16).to(dtype)
    assert haar_dwt(x).dtype == dtype
    assert haar_waverec(haar_wavedec(x, 2)).dtype == dtype
    channels_last = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    assert torch.allclose(haar_dwt(channels_last), haar_dwt(channels_last.contiguous()))


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by 8"):
        haar_wavedec(torch.randn(1, 3, 20, 16), 3)
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt(torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match="4D tensor"):
        haar_dwt(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="LL, LH, HL, HH"):
        haar_idwt(torch.randn(1, 3, 4, 4))


def test_per_level_filters_equal_the_chained_transform():
    """Each level is one strided convolution of the input; it equals transforming the previous LL band."""
    from diffusers_litevae.transforms.haar import haar_filters

    x = torch.randn(2, 3, 32, 16, dtype=torch.float64)
    direct = haar_wavedec(x, 3)
    low = x
    for bands in direct:
        torch.testing.assert_close(bands, haar_dwt(low), atol=1e-12, rtol=0)
        low = bands[:, :3]
    scaled = haar_wavedec(x, 3, haar_filters(3, 3, level_scale=0.5, dtype=torch.float64))
    for level, (bands, plain) in enumerate(zip(scaled, direct), start=1):
        torch.testing.assert_close(bands, plain * 0.5**level, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="filters for 2 levels"):
        haar_wavedec(x, 2, haar_filters(3, 3, dtype=torch.float64))


def test_autocast_does_not_lower_the_transform_precision():
    x = torch.randn(1, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bands = haar_wavedec(x, 2)
    assert all(b.dtype == torch.float32 for b in bands)
    torch.testing.assert_close(bands[0], haar_dwt(x))
