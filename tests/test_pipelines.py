"""AutoencoderLite as a drop-in VAE in real diffusers pipelines.

Covered: Stable Diffusion text-to-image, img2img and inpainting (9-channel inpainting UNet and the legacy
4-channel latent-blend path), SDXL text-to-image with an fp32 VAE and with an fp16 VAE and ``force_upcast``,
SD3 with 16-channel latents and ``shift_factor``, and ``save_pretrained`` / ``from_pretrained`` in a fresh process.

Every component is built here at toy size (no Hub access): a tiny ``UNet2DConditionModel``, CLIP text
encoders from a ``CLIPTextConfig``, a real ``CLIPTokenizer`` read from a small ``vocab.json``/``merges.txt``,
a scheduler, and ``tiny_autoencoder_lite()``. The pipelines are constructed with an SD-layout
``AutoencoderKL`` and then get ``pipe.vae = AutoencoderLite(...)``, the way users swap VAEs.

Each pipeline test checks that the VAE really does the work: the ``output_type="np"`` image equals our own
decode of the ``output_type="latent"`` result with the same seed, and pipelines that encode images
(img2img, inpainting) give different latents with a differently initialised encoder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from diffusers_litevae import AutoencoderLite, AutoencoderLiteTiny
from diffusers_litevae.testing_utils import (
    TINY_ENCODER,
    tiny_autoencoder_kl,
    tiny_autoencoder_lite,
    tiny_autoencoder_lite_tiny,
)

transformers = pytest.importorskip("transformers", reason="the pipelines' text encoders need transformers")
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

SIZE = 64  # output pixels; latents are 8x8
PROMPT = "a cat and a dog"
# Pixel tolerance for "this image is our own decode of those latents": both run the same fp32 convolutions,
# but the pipeline post-processes (denormalise, clamp, cast) in its own order.
DECODE_ATOL = 1e-5


# ---------------------------------------------------------------------------------------------- components


def _write_clip_vocab(folder: Path) -> None:
    """A byte-level BPE vocabulary in CLIP's on-disk format: every byte (plain and word-final) plus a few merges."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def _text_config(tokenizer: CLIPTokenizer, projection_dim: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> CLIPTokenizer:
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    _write_clip_vocab(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=16)


def _sd_components(tokenizer: CLIPTokenizer, unet_in_channels: int = 4) -> dict:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 8,
        in_channels=unet_in_channels,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(
        vae=tiny_autoencoder_kl(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl_components(tokenizer: CLIPTokenizer) -> dict:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 size/crop ids x 8 + pooled text_encoder_2 output
        cross_attention_dim=64,  # text_encoder (32) and text_encoder_2 (32) hidden states concatenated
        norm_num_groups=4,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, projection_dim=32))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    return dict(
        vae=tiny_autoencoder_kl(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def _with_lite_vae(pipe: DiffusionPipeline, vae: AutoencoderLite) -> DiffusionPipeline:
    pipe.vae = vae
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _input_image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def _mask_image() -> Image.Image:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[16:48, 16:48] = 255  # repaint the centre
    return Image.fromarray(mask)


def _run(pipe: DiffusionPipeline, output_type: str, **kwargs):
    return pipe(
        prompt=PROMPT,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type=output_type,
        **kwargs,
    ).images


def _decode_like_a_pipeline(vae: AutoencoderLite, latents: torch.Tensor) -> np.ndarray:
    """What ``VaeImageProcessor.postprocess(..., output_type="np")`` makes of ``vae.decode(latents / scaling)``."""
    with torch.no_grad():
        image = vae.decode(latents.float() / vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def _assert_image_is_vae_decode(pipe: DiffusionPipeline, vae: AutoencoderLite, **kwargs) -> torch.Tensor:
    """Run ``pipe`` to latents and to an image with the same seed; the image must be ``vae``'s decode of the latents."""
    latents = _run(pipe, "latent", **kwargs)
    image = _run(pipe, "np", **kwargs)
    assert latents.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.isfinite(image).all()
    assert image.std() > 1e-3, "a constant image: the VAE output did not reach the pipeline output"
    np.testing.assert_allclose(image, _decode_like_a_pipeline(vae, latents), atol=DECODE_ATOL)
    return latents


# ---------------------------------------------------------------------------------------------- SD 1.x/2.x


def test_text_to_image(tokenizer):
    vae = tiny_autoencoder_lite(seed=0)
    pipe = _with_lite_vae(StableDiffusionPipeline(**_sd_components(tokenizer)), vae)
    assert isinstance(pipe.vae, AutoencoderLite) and pipe.vae_scale_factor == 8
    _assert_image_is_vae_decode(pipe, vae)

    # A different decoder gives a different image from the same latents.
    other = _with_lite_vae(StableDiffusionPipeline(**_sd_components(tokenizer)), tiny_autoencoder_lite(seed=1))
    assert np.abs(_run(other, "np") - _run(pipe, "np")).max() > 1e-2


def test_attention_processors_and_qkv_fusion_keep_the_images(tokenizer):
    """diffusers' attention API on the SD decoder's mid-block attention, through a real pipeline."""
    from diffusers.models.attention_processor import AttnProcessor, FusedAttnProcessor2_0

    vae = tiny_autoencoder_lite(seed=0)
    pipe = _with_lite_vae(StableDiffusionPipeline(**_sd_components(tokenizer)), vae)
    reference = _run(pipe, "np")
    assert list(pipe.vae.attn_processors) == ["decoder.mid_block.attentions.0.processor"]

    # DiffusionPipeline.fuse_qkv_projections() fuses a VAE only when it is an AutoencoderKL (an isinstance check
    # in diffusers), so the pipeline's UNet and the VAE are fused in two calls (docs/pipelines.md).
    with pytest.raises(ValueError, match="AutoencoderKL"):
        pipe.fuse_qkv_projections()
    pipe.fuse_qkv_projections(vae=False)
    pipe.vae.fuse_qkv_projections()
    assert all(isinstance(p, FusedAttnProcessor2_0) for p in pipe.vae.attn_processors.values())
    assert pipe.vae.decoder.mid_block.attentions[0].fused_projections
    np.testing.assert_allclose(_run(pipe, "np"), reference, atol=1e-5)

    pipe.vae.unfuse_qkv_projections()
    pipe.unfuse_qkv_projections(vae=False)
    pipe.vae.set_attn_processor(AttnProcessor())
    assert all(type(p) is AttnProcessor for p in pipe.vae.attn_processors.values())
    np.testing.assert_allclose(_run(pipe, "np"), reference, atol=1e-5)
    pipe.vae.set_default_attn_processor()
    np.testing.assert_allclose(_run(pipe, "np"), reference, atol=1e-5)


def test_a_model_trained_from_scratch_drops_into_the_pipelines(tokenizer, tmp_path):
    """The folder `litevae train` writes (its own scaling_factor, SMC decoder) works as pipe.vae as it is."""
    from diffusers_litevae.testing_utils import TINY_ENCODER, save_png, smooth_images
    from diffusers_litevae.training import TrainConfig, train_autoencoder

    for index, image in enumerate(smooth_images(6, 40, 48, seed=3)):
        save_png(image, tmp_path / "photos" / f"img_{index}.png")
    config = TrainConfig(
        encoder="S",
        encoder_config=dict(TINY_ENCODER),
        decoder_block_out_channels=(8, 16, 16, 16),
        decoder_layers_per_block=1,
        decoder_norm_num_groups=4,
        decoder_attention=False,
        discriminator_block_out_channels=(8, 16),
        train_data_dir=str(tmp_path / "photos"),
        num_validation_images=1,
        resolution_schedule="32",
        train_batch_size=2,
        max_train_steps=4,
        discriminator_start_step=2,
        scaling_images=2,
        output_dir=str(tmp_path / "vae"),
        progress_bar=False,
    )
    train_autoencoder(config)
    vae = AutoencoderLite.from_pretrained(tmp_path / "vae")
    assert vae.config.use_smc and vae.config.scaling_factor != 0.18215
    pipe = _with_lite_vae(StableDiffusionImg2ImgPipeline(**_sd_components(tokenizer)), vae)
    _assert_image_is_vae_decode(pipe, vae, image=_input_image(), strength=0.75)
    pipe = _with_lite_vae(StableDiffusionPipeline(**_sd_components(tokenizer)), vae)
    _assert_image_is_vae_decode(pipe, vae)


def test_img2img_encodes_with_the_lite_encoder(tokenizer):
    vae = tiny_autoencoder_lite(seed=0)
    pipe = _with_lite_vae(StableDiffusionImg2ImgPipeline(**_sd_components(tokenizer)), vae)
    latents = _assert_image_is_vae_decode(pipe, vae, image=_input_image(), strength=0.75)

    # Same decoder, a different encoder: the starting latents (vae.encode(image)) and so the result change.
    other_vae = tiny_autoencoder_lite(seed=1)
    other_vae.decoder.load_state_dict(vae.decoder.state_dict())
    other_vae.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
    other = _with_lite_vae(StableDiffusionImg2ImgPipeline(**_sd_components(tokenizer)), other_vae)
    other_latents = _run(other, "latent", image=_input_image(), strength=0.75)
    assert (other_latents - latents).abs().max() > 1e-3


@pytest.mark.parametrize("unet_in_channels", [9, 4], ids=["inpainting_unet_9ch", "legacy_unet_4ch"])
def test_inpaint(tokenizer, unet_in_channels):
    """9 channels: SD inpainting checkpoints (UNet sees mask + masked-image latents); 4: the legacy blend path."""
    vae = tiny_autoencoder_lite(seed=0)
    pipe = _with_lite_vae(StableDiffusionInpaintPipeline(**_sd_components(tokenizer, unet_in_channels)), vae)
    kwargs = dict(image=_input_image(), mask_image=_mask_image(), strength=0.9, height=SIZE, width=SIZE)
    latents = _assert_image_is_vae_decode(pipe, vae, **kwargs)

    other_vae = tiny_autoencoder_lite(seed=1)
    other_vae.decoder.load_state_dict(vae.decoder.state_dict())
    other_vae.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
    other = _with_lite_vae(StableDiffusionInpaintPipeline(**_sd_components(tokenizer, unet_in_channels)), other_vae)
    assert (_run(other, "latent", **kwargs) - latents).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- SDXL


def test_sdxl_text_to_image_fp32(tokenizer):
    vae = tiny_autoencoder_lite(seed=0)
    pipe = _with_lite_vae(StableDiffusionXLPipeline(**_sdxl_components(tokenizer)), vae)
    _assert_image_is_vae_decode(pipe, vae, height=SIZE, width=SIZE)


def test_sdxl_fp16_vae_with_force_upcast(tokenizer):
    """SDXL decodes with an fp16 ``force_upcast`` VAE cast to fp32 (it reads ``vae.post_quant_conv``), then back."""
    vae = tiny_autoencoder_lite(seed=0, force_upcast=True).to(torch.float16)
    reference = tiny_autoencoder_lite(seed=0).to(torch.float16).float()  # the same fp16-rounded weights, in fp32
    pipe = _with_lite_vae(StableDiffusionXLPipeline(**_sdxl_components(tokenizer)), vae)

    latents = _run(pipe, "latent", height=SIZE, width=SIZE)
    image = _run(pipe, "np", height=SIZE, width=SIZE)
    assert pipe.vae.dtype == torch.float16, "the pipeline should cast the VAE back to fp16 after decoding"
    assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()
    np.testing.assert_allclose(image, _decode_like_a_pipeline(reference, latents), atol=DECODE_ATOL)


# ---------------------------------------------------------------------------------------------- SD3: 16 channels


def test_sd3_sixteen_channel_latents_with_shift_factor(tokenizer):
    """An SD3-style VAE (16 channels, shift_factor, no post_quant_conv) converted with from_autoencoder_kl."""
    kl = tiny_autoencoder_kl(
        latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609
    )
    vae = AutoencoderLite.from_autoencoder_kl(kl, encoder=TINY_ENCODER)
    assert vae.post_quant_conv is None and vae.config.shift_factor == 0.0609
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=SIZE // 8,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,  # no T5 here: the pipeline feeds zeros of this width in its place
        pooled_projection_dim=64,  # two CLIP projections of 32
    )
    torch.manual_seed(0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=kl,
        text_encoder=CLIPTextModelWithProjection(_text_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer)),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    _with_lite_vae(pipe, vae)
    kwargs = dict(height=SIZE, width=SIZE, max_sequence_length=16)
    latents = _run(pipe, "latent", **kwargs)
    image = _run(pipe, "np", **kwargs)
    assert latents.shape == (1, 16, SIZE // 8, SIZE // 8) and image.shape == (1, SIZE, SIZE, 3)
    with torch.no_grad():  # SD3 pipelines decode latents / scaling_factor + shift_factor
        expected = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
    expected = (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.isfinite(image).all() and image.std() > 1e-3
    np.testing.assert_allclose(image, expected, atol=DECODE_ATOL)


# ---------------------------------------------------------------------------------------------- save / load

_LOAD_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import torch
    import diffusers_litevae  # diffusers only loads classes from modules already imported (see docs/pipelines.md)
    from diffusers import DiffusionPipeline

    for folder in sys.argv[1:]:
        pipe = DiffusionPipeline.from_pretrained(folder)
        latents = torch.load(folder + "/probe_latents.pt")
        with torch.no_grad():
            decoded = pipe.vae.decode(latents).sample
        torch.save(decoded, folder + "/probe_decoded.pt")
        print(json.dumps({"pipeline": type(pipe).__name__, "vae_module": type(pipe.vae).__module__,
                          "vae_class": type(pipe.vae).__name__, "vae_dtype": str(pipe.vae.dtype)}))
    """
)


V01_TINY = Path(__file__).parent / "fixtures" / "v0.1" / "autoencoder_lite_tiny_decoder"
VAE_KINDS = ("sd_decoder", "tiny_decoder", "tiny_decoder_saved_by_v0.1")


def _save_pipeline_with(vae_kind: str, tokenizer, folder: Path) -> AutoencoderLite | AutoencoderLiteTiny:
    """Save an SD pipeline whose VAE is of ``vae_kind`` into ``folder``, with probe latents; returns the VAE."""
    vae = tiny_autoencoder_lite(seed=0) if vae_kind == "sd_decoder" else tiny_autoencoder_lite_tiny(seed=0)
    if vae_kind == "tiny_decoder_saved_by_v0.1":
        vae = AutoencoderLiteTiny.from_pretrained(V01_TINY)
    pipe = _with_lite_vae(StableDiffusionPipeline(**_sd_components(tokenizer)), vae)
    pipe.save_pretrained(folder)
    module = "autoencoder_lite" if vae_kind == "sd_decoder" else "autoencoder_lite_tiny"
    model_index = json.loads((folder / "model_index.json").read_text())
    assert model_index["vae"] == [f"diffusers_litevae.models.{module}", type(vae).__name__]
    if vae_kind == "tiny_decoder_saved_by_v0.1":  # the folder and the index entry exactly as version 0.1 wrote them
        shutil.rmtree(folder / "vae")
        shutil.copytree(V01_TINY, folder / "vae", ignore=shutil.ignore_patterns("expected.pt"))
        model_index["vae"] = ["diffusers_litevae.models.autoencoder_lite", "AutoencoderLite"]
        (folder / "model_index.json").write_text(json.dumps(model_index))
    assert (folder / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    torch.save(latents, folder / "probe_latents.pt")
    return vae


def test_save_pretrained_then_from_pretrained_in_a_fresh_process(tokenizer, tmp_path):
    """A saved pipeline records the VAE's module and class in model_index.json and loads back in a fresh process
    (only ``import diffusers_litevae``), for either LiteVAE class. Pipelines saved by version 0.1 recorded
    ``AutoencoderLite`` for a TAESD-family VAE too; they load, with the VAE as the ``AutoencoderLiteTiny`` it now is.
    One process loads the three folders (a Python start and the torch import cost seconds each)."""
    folders = [tmp_path / kind for kind in VAE_KINDS]
    vaes = [_save_pipeline_with(kind, tokenizer, folder) for kind, folder in zip(VAE_KINDS, folders)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, *map(str, folders)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(folders) :]]
    for kind, folder, vae, loaded in zip(VAE_KINDS, folders, vaes, reports):
        module = "autoencoder_lite" if kind == "sd_decoder" else "autoencoder_lite_tiny"
        assert loaded == {
            "pipeline": "StableDiffusionPipeline",
            "vae_module": f"diffusers_litevae.models.{module}",
            "vae_class": type(vae).__name__,
            "vae_dtype": "torch.float32",
        }, kind
        with torch.no_grad():
            expected = vae.decode(torch.load(folder / "probe_latents.pt")).sample
        torch.testing.assert_close(torch.load(folder / "probe_decoded.pt"), expected, rtol=0, atol=0)
