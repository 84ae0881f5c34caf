"""Encoder distillation: teachers, losses, data, one training step, the full run, resume, multi-process,
the output as a pipeline VAE, and bad-input errors.

Everything runs on CPU against a tiny SD-layout ``AutoencoderKL`` teacher that a module fixture first trains for
a few seconds on smooth synthetic images, so its decoder is a real target (its reconstructions beat a flat
image) rather than a random function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from diffusers_litevae import AutoencoderLite, TinyDecoder, TinyEncoder
from diffusers_litevae.image_io import ImageFiles
from diffusers_litevae.testing_utils import TINY_ENCODER, save_png, smooth_images, tiny_autoencoder_kl
from diffusers_litevae.training import (
    DistillationLoss,
    DistillConfig,
    LossWeights,
    RandomCropDataset,
    ResolutionSchedule,
    StepIndexedBatchSampler,
    TrainingInputError,
    distill,
    distill_step,
    find_images,
    gaussian_filtered_loss,
    load_lpips,
    load_teacher,
    random_crop_flip,
    validate_config,
    wavelet_loss,
    wrap_teacher,
)

RESOLUTION = 32  # training crops: 4x4 latents


pytestmark = pytest.mark.usefixtures("one_thread")


_smooth_images, _save_png = smooth_images, save_png  # shared with the other training tests


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """14 smooth images in nested folders (one smaller than the crop), plus one corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    for index, image in enumerate(_smooth_images(12, 40, 48, seed=1)):
        _save_png(image, root / ("a" if index < 6 else "b/c") / f"img_{index:02d}.png")
    _save_png(_smooth_images(1, 24, 40, seed=2)[0], root / "b" / "small.png")  # short side < crop: resized up
    (root / "b" / "zz_corrupt.jpg").write_bytes(b"this is not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny AutoencoderKL trained for ~100 Adam steps to reconstruct smooth 32 px images, saved as a folder."""
    torch.manual_seed(0)
    vae = tiny_autoencoder_kl()
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for step in range(100):
        images = _smooth_images(8, RESOLUTION, RESOLUTION, seed=100 + step)
        reconstruction = vae.decode(vae.encode(images).latent_dist.mode()).sample
        F.mse_loss(reconstruction, images).backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("teacher")
    vae.save_pretrained(folder)
    return folder


def _config(image_folder: Path, teacher_dir: Path, output_dir: Path, **overrides) -> DistillConfig:
    values = dict(
        teacher=str(teacher_dir),
        student=None,
        student_config=dict(TINY_ENCODER),
        train_data_dir=str(image_folder),
        num_validation_images=2,
        resolution_schedule=str(RESOLUTION),
        train_batch_size=4,
        max_train_steps=40,
        learning_rate=2e-3,
        lr_warmup_steps=0,
        validation_steps=20,
        checkpointing_steps=20,
        logging_steps=5,
        output_dir=str(output_dir),
        progress_bar=False,
        seed=0,
    )
    values.update(overrides)
    return DistillConfig(**values)


@pytest.fixture(scope="module")
def distilled(image_folder, teacher_dir, tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("distilled")
    result = distill(_config(image_folder, teacher_dir, output_dir))
    return output_dir, result


# ------------------------------------------------------------------------------------------------ teachers


def _tiny_taesd_folder(folder: Path, latent_channels: int = 4) -> Path:
    torch.manual_seed(0)
    encoder = TinyEncoder(latent_channels=latent_channels, channels=8, num_blocks=(1, 1, 1, 1))
    decoder = TinyDecoder(
        latent_channels=latent_channels, channels=8, num_blocks=(1, 1, 1, 1), midblock_gn=(True, False, False, False)
    )
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.layers.state_dict(), folder / "toy_encoder.pth")
    torch.save(decoder.layers.state_dict(), folder / "toy_decoder.pth")
    return folder


def _tiny_autoencoder_tiny():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )


def test_teachers_from_folders_give_students_with_bit_identical_decoders(tmp_path):
    kl = tiny_autoencoder_kl()
    kl.save_pretrained(tmp_path / "kl")
    tiny = _tiny_autoencoder_tiny()
    tiny.save_pretrained(tmp_path / "tiny")
    lite = AutoencoderLite(
        **{
            **dict(latent_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4),
            **TINY_ENCODER,
        }
    )
    lite.save_pretrained(tmp_path / "lite")
    _tiny_taesd_folder(tmp_path / "taesd")

    originals = {"kl": kl.eval(), "tiny": tiny.eval(), "lite": lite.eval()}  # eval, as from_pretrained gives
    expected_types = {"kl": "autoencoder_kl", "tiny": "autoencoder_tiny", "lite": "diffusers_vae", "taesd": "taesd"}
    latents = torch.randn(2, 4, 3, 5)
    for name, kind in expected_types.items():
        teacher = load_teacher(tmp_path / name)
        assert teacher.teacher_type == kind and teacher.latent_channels == 4
        assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
        student = teacher.make_student(dict(TINY_ENCODER))
        with torch.no_grad():
            assert torch.equal(student.decode(latents).sample, teacher.decode(latents)), name
            if name in originals:  # ...and equal to the untouched diffusers model's own decode
                assert torch.equal(student.decode(latents).sample, originals[name].decode(latents).sample), name
        # The saved student keeps it.
        student.save_pretrained(tmp_path / f"student_{name}")
        reloaded = AutoencoderLite.from_pretrained(tmp_path / f"student_{name}")
        with torch.no_grad():
            assert torch.equal(reloaded.decode(latents).sample, teacher.decode(latents)), name
    assert load_teacher(tmp_path / "kl").has_logvar and not load_teacher(tmp_path / "tiny").has_logvar


def test_taesd_teacher_converts_value_ranges(tmp_path):
    folder = _tiny_taesd_folder(tmp_path / "taesd")
    teacher = load_teacher(folder)
    encoder = TinyEncoder(latent_channels=4, channels=8, num_blocks=(1, 1, 1, 1))
    encoder.layers.load_state_dict(torch.load(folder / "toy_encoder.pth"))
    images = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        mean, logvar = teacher.encode(images)
        assert logvar is None
        assert torch.equal(mean, encoder((images + 1) / 2))  # TAESD networks take [0, 1]


def test_deterministic_protocol_teacher_returning_latents():
    """A module following the diffusers VAE protocol with a deterministic `.latents` encoder is a usable teacher."""
    from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
    from diffusers.models.autoencoders.vae import DecoderOutput

    inner = _tiny_autoencoder_tiny()

    class CustomVAE(torch.nn.Module):
        config = inner.config

        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = inner.encoder, inner.decoder

        def encode(self, x):
            return AutoencoderTinyOutput(latents=self.encoder(x))

        def decode(self, z):
            return DecoderOutput(sample=self.decoder(z))

    teacher = wrap_teacher(CustomVAE(), "custom")
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mean, logvar = teacher.encode(images)
        student = teacher.make_student(dict(TINY_ENCODER))
        assert torch.equal(student.decode(mean).sample, inner.decode(mean).sample)
    assert logvar is None and not teacher.has_logvar and teacher.teacher_type == "diffusers_vae"


def test_taef2_teacher_from_shared_weights(shared_dir):
    teacher = load_teacher(shared_dir / "weights" / "taef2")
    assert (teacher.teacher_type, teacher.latent_channels) == ("taesd", 32)
    image = Image.open(sorted((shared_dir / "data" / "kodak24").glob("*.png"))[0]).convert("RGB")
    from diffusers_litevae.training import load_eval_image

    x = load_eval_image(image, resolution=64)[None]
    with torch.no_grad():
        reconstruction = teacher.decode(teacher.encode(x)[0])
        student = teacher.make_student("S")
        latents = torch.randn(1, 32, 4, 4)
        assert torch.equal(student.decode(latents).sample, teacher.decode(latents))
    psnr = -10 * torch.log10(F.mse_loss(reconstruction.clamp(-1, 1), x) / 4)
    assert psnr > 22  # a real autoencoder in the right value range (a range mix-up gives < 12 dB)


def test_teacher_errors(tmp_path):
    with pytest.raises(TrainingInputError, match="does not exist"):
        load_teacher(tmp_path / "missing")
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    with pytest.raises(TrainingInputError, match="pipeline folder without a vae/ subfolder"):
        load_teacher(tmp_path / "pipe")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingInputError, match="is not a VAE folder"):
        load_teacher(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x_encoder.pth").write_bytes(b"garbage")
    (tmp_path / "broken" / "x_decoder.pth").write_bytes(b"garbage")
    with pytest.raises(TrainingInputError, match="could not read the TAESD-family pair"):
        load_teacher(tmp_path / "broken")
    with pytest.raises(TrainingInputError, match="Hugging Face Hub"):
        load_teacher("nobody-litevae-test/no-such-vae")  # HF_HUB_OFFLINE=1: fails fast, one line


# -------------------------------------------------------------------------------------------------- losses


def test_losses_see_what_they_should():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    offset = target + 0.3  # a pure low-frequency change
    assert wavelet_loss(offset, target) < 1e-6 and gaussian_filtered_loss(offset, target) < 1e-6
    detail = target + 0.1 * torch.randn_like(target)  # high-frequency noise
    assert wavelet_loss(detail, target) > 0.01 and gaussian_filtered_loss(detail, target) > 0.01

    loss = DistillationLoss(
        LossWeights(latent=1, std=0.5, reconstruction=1, wavelet=0.1, gaussian=0.1), latent_scale=0.5
    )
    mean = torch.randn(2, 4, 4, 4)
    logvar = torch.full_like(mean, 2 * np.log(2.0))  # raw std 2 -> normalized std 1
    total, parts = loss(mean + 1, logvar, mean, None, detail, target)
    assert torch.isclose(parts["latent"], torch.tensor(1.0))
    assert torch.isclose(parts["std"], torch.tensor(1.0))  # deterministic teacher: target std 0
    expected = (
        parts["latent"] + 0.5 * parts["std"] + parts["reconstruction"] + 0.1 * (parts["wavelet"] + parts["gaussian"])
    )
    assert torch.isclose(total, expected) and torch.isclose(parts["total"], expected)
    _, parts = loss(mean, logvar, mean, logvar, target, target)  # identical posteriors and images: all zero
    assert all(float(v) < 1e-6 for v in parts.values())


def test_lpips_that_cannot_load_is_a_clear_error(monkeypatch):
    import torchmetrics.image.lpip as lpip

    def no_torchvision(**kwargs):  # what torchmetrics raises where torchvision is missing
        raise ModuleNotFoundError("LPIPS metric requires that torchvision is installed.")

    def no_weights(**kwargs):  # offline: the VGG backbone download fails
        raise OSError("could not download vgg16 weights")

    for failure, expected in ((no_torchvision, "torchvision"), (no_weights, "could not download")):
        monkeypatch.setattr(lpip, "LearnedPerceptualImagePatchSimilarity", failure)
        with pytest.raises(TrainingInputError, match=expected) as error:
            load_lpips()
        assert "\n" not in str(error.value) and "--lpips_weight 0" in str(error.value)


def test_lpips_loss_feeds_the_shared_metric_images_in_0_1():
    """Distillation's LPIPS term is the evaluation metric's module, given [0, 1] images, per image, with gradients."""
    from diffusers_litevae.evaluation.metrics import LPIPSDistance

    seen = []

    class MeanAbsoluteDifference(torch.nn.Module):  # stands in for torchmetrics' LPIPS network
        def forward(self, x, y, normalize=False):
            seen.append((float(x.min()), float(x.max()), normalize))
            return (x - y).abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)

    loss = DistillationLoss(
        LossWeights(latent=0, std=0, reconstruction=0, wavelet=0, gaussian=0, lpips=1.0),
        lpips_model=LPIPSDistance(MeanAbsoluteDifference()),
    )
    mean, logvar = torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)
    target = torch.rand(2, 3, 16, 16) * 2 - 1  # decoder outputs and targets are in [-1, 1]
    reconstruction = (target + 0.2 * torch.randn_like(target)).clamp(-1, 1).requires_grad_(True)
    total, parts = loss(mean, logvar, mean, logvar, reconstruction, target)
    expected = ((reconstruction - target) / 2).abs().mean()
    assert torch.isclose(parts["lpips"], expected.detach()) and torch.isclose(total, expected)
    assert seen and all(0 <= low and high <= 1 and normalize for low, high, normalize in seen)
    total.backward()
    assert reconstruction.grad is not None and reconstruction.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- data


def test_find_images_and_data_errors(image_folder, tmp_path):
    from diffusers_litevae.training.data import prepare_data

    names = [p.relative_to(image_folder).as_posix() for p in find_images(image_folder)]
    assert names == sorted(names) and len(names) == 14 and "notes.txt" not in names and "b/zz_corrupt.jpg" in names
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("x")
    for folder, message in [(tmp_path / "nope", "does not exist"), (tmp_path / "empty", "holds no")]:
        with pytest.raises(TrainingInputError, match=message):  # the training commands' own error type
            prepare_data(DistillConfig(teacher="unused", train_data_dir=str(folder)))


def test_settings_check_their_values_when_built():
    """A value out of range fails where the settings are built, for the API as for the CLI (one line each); a field
    changed afterwards is checked again when the run starts."""
    import re

    from diffusers_litevae.training import TrainConfig

    cases = [
        (dict(optimizer="sgd"), "--optimizer must be 'adam' or 'adamw', got 'sgd'."),
        (dict(mixed_precision="fp8"), "--mixed_precision must be one of no, fp16, bf16, got 'fp8'."),
        (dict(train_batch_size=0), "--train_batch_size must be a positive integer, got 0."),
        (dict(latent_weight=-1.0), "--latent_weight must be a finite number >= 0, got -1.0."),
    ]
    for values, message in cases:
        with pytest.raises(TrainingInputError, match=re.escape(message)):
            DistillConfig(teacher="unused", **values)
    with pytest.raises(TrainingInputError, match=re.escape("--decoder must be one of smc, groupnorm, tiny")):
        TrainConfig(decoder="x")
    config = DistillConfig(teacher="unused", train_data_dir="photos")
    config.learning_rate = 0
    with pytest.raises(TrainingInputError, match="--learning_rate must be > 0"):
        validate_config(config)


def test_resolution_schedule():
    schedule = ResolutionSchedule.parse("128:2000,256")
    assert [schedule.resolution_at(s) for s in (0, 1999, 2000, 10**6)] == [128, 128, 256, 256]
    assert ResolutionSchedule.parse("64").resolution_at(5) == 64
    for bad, message in [
        ("100", "multiple of 8"),
        ("128,256", "UNTIL_STEP"),
        ("128:20,64:10,32", "increasing"),
        ("x", "cannot read"),
    ]:
        with pytest.raises(TrainingInputError, match=message):
            ResolutionSchedule.parse(bad)


def test_sampler_is_step_indexed_and_sharded():
    schedule = ResolutionSchedule.parse("16:3,32")
    full = list(StepIndexedBatchSampler(10, 4, schedule, seed=1, grad_accum=2, end_step=6))
    resumed = list(StepIndexedBatchSampler(10, 4, schedule, seed=1, grad_accum=2, start_step=4, end_step=6))
    assert resumed == full[8:]  # resuming needs no loader state
    assert [batch[0][1] for batch in full] == [16] * 6 + [32] * 6  # resolution follows optimizer steps
    epoch = [item for batch in full for item, _, _ in batch][:10]
    assert sorted(epoch) == list(range(10))  # each epoch is a permutation
    ranks = [list(StepIndexedBatchSampler(10, 2, schedule, seed=1, rank=r, world_size=2, end_step=2)) for r in (0, 1)]
    single = list(StepIndexedBatchSampler(10, 4, schedule, seed=1, end_step=2))
    for step in range(2):  # two processes of batch 2 read exactly what one process of batch 4 would
        assert [i for i, _, _ in ranks[0][step] + ranks[1][step]] == [i for i, _, _ in single[step]]


def test_dataset_crops_resizes_small_images_and_skips_unreadable(image_folder):
    paths = [image_folder / "b" / "small.png", image_folder / "b" / "zz_corrupt.jpg", image_folder / "a" / "img_00.png"]
    dataset = RandomCropDataset(ImageFiles(paths))
    small = dataset[(0, RESOLUTION, 7)]
    assert small["pixel_values"].shape == (3, RESOLUTION, RESOLUTION) and small["skipped"] == []
    replaced = dataset[(1, RESOLUTION, 7)]  # the corrupt file is replaced by the next readable image
    assert replaced["pixel_values"].shape == (3, RESOLUTION, RESOLUTION)
    assert len(replaced["skipped"]) == 1 and "zz_corrupt.jpg" in replaced["skipped"][0]
    image = Image.open(paths[2]).convert("RGB")
    crop = random_crop_flip(image, 24, np.random.default_rng(3))
    assert crop.shape == (3, 24, 24) and -1 <= crop.min() and crop.max() <= 1
    assert torch.equal(crop, random_crop_flip(image, 24, np.random.default_rng(3)))  # crops are seeded


def test_hub_dataset_source(monkeypatch, tmp_path):
    """--dataset_name goes through datasets.load_dataset (mocked: no Hub here),
    rows split into validation and training."""
    datasets = pytest.importorskip("datasets")
    from diffusers_litevae.training.data import prepare_data

    images = [Image.fromarray((np.random.default_rng(i).random((40, 48, 3)) * 255).astype(np.uint8)) for i in range(6)]
    table = datasets.Dataset.from_dict({"picture": images}).cast_column("picture", datasets.Image())
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or table)
    config = DistillConfig(
        teacher="unused", dataset_name="someone/photos", image_column="picture", num_validation_images=2
    )
    data = prepare_data(config)
    assert calls[0][0][0] == "someone/photos" and calls[0][1]["split"] == "train"
    assert data.num_train_images == 4 and len(data.validation_images) == 2 and "first 2 rows" in data.eval_set
    sample = RandomCropDataset(data.source)[(0, RESOLUTION, 0)]
    assert sample["pixel_values"].shape == (3, RESOLUTION, RESOLUTION)
    with pytest.raises(TrainingInputError, match="no image column 'image'"):
        prepare_data(DistillConfig(teacher="unused", dataset_name="someone/photos"))


# ------------------------------------------------------------------------------------------------ training


def test_distill_step_accumulation_matches_one_big_batch(teacher_dir):
    from accelerate import Accelerator

    teacher = load_teacher(teacher_dir)
    images = _smooth_images(4, RESOLUTION, RESOLUTION, seed=5)
    weights = []
    for micro_batches in ([images], list(images.split(2))):
        torch.manual_seed(0)
        student = teacher.make_student(dict(TINY_ENCODER))
        accelerator = Accelerator()  # default device: the state is a process-wide singleton shared with other tests
        teacher.to(accelerator.device)
        encoder = student.encoder
        optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
        encoder, optimizer = accelerator.prepare(encoder, optimizer)
        parts = distill_step(
            accelerator, encoder, teacher, DistillationLoss(), micro_batches, optimizer, max_grad_norm=None
        )
        assert {"latent", "std", "reconstruction", "wavelet", "gaussian", "total"} <= set(parts)
        weights.append(torch.cat([p.detach().flatten() for p in encoder.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-6)


def test_distillation_learns_the_teacher(distilled, teacher_dir):
    """latent MSE falls by at least half and the decoded reconstruction gets better."""
    output_dir, result = distilled
    first, last = result["curve"][0], result["curve"][-1]
    assert first["step"] == 0 and last["step"] == 40
    assert last["latent_mse"] <= 0.5 * first["latent_mse"], (first, last)
    assert last["psnr_student"] > first["psnr_student"] + 0.5, (first, last)
    # The teacher is a meaningful target: its own reconstructions beat the student's starting point.
    assert last["psnr_teacher"] > first["psnr_student"] + 1.0
    # The one corrupt file was met (40 steps x 4 images cover the 12 training images many times) and counted.
    assert result["num_skipped_images"] == 1 and "zz_corrupt.jpg" in result["skipped_images"][0]


def test_output_folder_contract(distilled, teacher_dir):
    """AutoencoderLite.from_pretrained loads it; decoder bit-identical; JSON contract."""
    from diffusers import AutoencoderKL

    output_dir, result = distilled
    student = AutoencoderLite.from_pretrained(output_dir)
    teacher = AutoencoderKL.from_pretrained(teacher_dir)
    latents = torch.randn(2, 4, 4, 6)
    with torch.no_grad():
        assert torch.equal(student.decode(latents).sample, teacher.decode(latents).sample)
    assert student.config.scaling_factor == teacher.config.scaling_factor
    assert tuple(student.config.block_out_channels) == tuple(teacher.config.block_out_channels)

    saved = json.loads((output_dir / "distillation.json").read_text())
    assert saved["teacher"]["type"] == "autoencoder_kl" and saved["teacher"]["latent_channels"] == 4
    assert saved["student"]["preset"] is None
    assert saved["student"]["encoder_parameters"] == sum(p.numel() for p in student.encoder.parameters())
    metrics = saved["final_metrics"]
    for key in (
        "step",
        "images_seen",
        "psnr_student",
        "psnr_teacher",
        "ssim_student",
        "ssim_teacher",
        "latent_mse",
        "eval_images",
        "eval_set",
    ):
        assert metrics[key] is not None, key
    assert metrics["images_seen"] == 40 * 4 and metrics["eval_images"] == 2
    assert saved["settings"]["resolution_schedule"] == str(RESOLUTION) and saved["train_images_per_s"] > 0
    assert [entry["step"] for entry in saved["curve"]] == [0, 20, 40]
    # The saved encoder is the one that produced the final metrics.
    with torch.no_grad():
        assert torch.equal(
            load_file(output_dir / "diffusion_pytorch_model.safetensors")["encoder.aggregation_unet.conv_out.weight"],
            student.encoder.aggregation_unet.conv_out.weight,
        )
    for name in ("curve.png", "validation/step_000000.png", "validation/step_000040.png"):
        assert Image.open(output_dir / name).size[0] > 0
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["checkpoint-20", "checkpoint-40"]


def test_distilled_vae_in_a_stable_diffusion_pipeline(distilled):
    """the output folder works as pipe.vae for text-to-image and image-to-image."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline, UNet2DConditionModel

    output_dir, _ = distilled
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=tiny_autoencoder_kl(),
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    vae = AutoencoderLite.from_pretrained(output_dir)
    pipe.vae = vae
    embeds = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0))
    kwargs = dict(
        prompt_embeds=embeds,
        negative_prompt_embeds=torch.zeros_like(embeds),
        num_inference_steps=2,
        height=64,
        width=64,
    )
    latents = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(1)).images
    image = pipe(**kwargs, output_type="np", generator=torch.Generator().manual_seed(1)).images
    with torch.no_grad():
        expected = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    np.testing.assert_allclose(image[0], expected[0].permute(1, 2, 0).numpy(), atol=1e-5)

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    source = Image.fromarray((image[0] * 255).astype(np.uint8))
    out = img2img(
        image=source, strength=0.5, output_type="np", generator=torch.Generator().manual_seed(2), **kwargs
    ).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


class _Killed(Exception):
    pass


def _distill_killed_after_checkpoint(config: DistillConfig, kill_step: int, monkeypatch) -> None:
    """Run ``distill(config)`` as a process that dies right after writing its ``kill_step`` checkpoint."""
    import diffusers_litevae.training.checkpointing as checkpointing_module

    real_save = checkpointing_module.save_checkpoint

    def save_then_die(accelerator, checkpoints_dir, step, *args, **kwargs):
        path = real_save(accelerator, checkpoints_dir, step, *args, **kwargs)
        if step == kill_step:
            raise _Killed  # the process dies here: no final output is written
        return path

    monkeypatch.setattr(checkpointing_module, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        distill(config)
    monkeypatch.setattr(checkpointing_module, "save_checkpoint", real_save)


def test_resume_matches_an_uninterrupted_run(image_folder, teacher_dir, tmp_path, monkeypatch):
    """a run killed right after its step-4 checkpoint and resumed with `latest` ends at the same
    weights as 8 steps in one go (EMA, gradient accumulation and a warmup+cosine LR schedule included)."""
    common = dict(
        max_train_steps=8,
        checkpointing_steps=4,
        validation_steps=100,
        gradient_accumulation_steps=2,
        train_batch_size=2,
        use_ema=True,
        lr_scheduler="cosine",
        lr_warmup_steps=2,
        num_grid_images=0,
    )
    straight_result = distill(_config(image_folder, teacher_dir, tmp_path / "straight", **common))
    _distill_killed_after_checkpoint(_config(image_folder, teacher_dir, tmp_path / "resumed", **common), 4, monkeypatch)
    assert not (tmp_path / "resumed" / "distillation.json").exists()
    result = distill(
        _config(image_folder, teacher_dir, tmp_path / "resumed", **common, resume_from_checkpoint="latest")
    )
    assert result["final_metrics"]["step"] == 8 and result["final_metrics"]["images_seen"] == 8 * 2 * 2
    # Logged at the same steps; the window 6-8, entirely after the resume, has the same mean loss.
    assert [e["step"] for e in result["loss_history"]] == [e["step"] for e in straight_result["loss_history"]] == [5, 8]
    assert result["loss_history"][-1]["total"] == pytest.approx(straight_result["loss_history"][-1]["total"], rel=1e-5)

    for name in ("checkpoints/checkpoint-8/model.safetensors", "diffusion_pytorch_model.safetensors"):  # raw, EMA
        straight, resumed = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert straight.keys() == resumed.keys()
        for key in straight:
            torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")


@pytest.mark.slow
def test_accelerate_launch_two_processes(image_folder, teacher_dir, tmp_path, free_port):
    """`accelerate launch --num_processes 2` on CPU (gloo) trains end to end into one output folder."""
    output_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "diffusers_litevae.cli",
        "distill",
        "--teacher",
        str(teacher_dir),
        "--train_data_dir",
        str(image_folder),
        "--student",
        "",
        "--student_config",
        json.dumps(TINY_ENCODER),
        "--resolution_schedule",
        str(RESOLUTION),
        "--train_batch_size",
        "2",
        "--max_train_steps",
        "4",
        "--validation_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--num_validation_images",
        "2",
        "--output_dir",
        str(output_dir),
        "--no-progress_bar",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((output_dir / "distillation.json").read_text())
    assert result["final_metrics"]["images_seen"] == 4 * 2 * 2  # two processes, batch 2 each
    assert sorted(p.name for p in (output_dir / "checkpoints" / "checkpoint-4").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    AutoencoderLite.from_pretrained(output_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # one output folder


# -------------------------------------------------------------------------------------------------- errors


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from diffusers_litevae.cli import main

    code = main(["distill", *argv])
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_fail_before_training(image_folder, teacher_dir, tmp_path, capsys, monkeypatch):
    """one clear line each, and no training output written."""
    base = ["--teacher", str(teacher_dir), "--train_data_dir", str(image_folder), "--student", "S", "--output_dir"]
    (tmp_path / "empty").mkdir()
    monkeypatch.setitem(sys.modules, "torchmetrics.image.lpip", None)  # LPIPS cannot load, wherever this runs
    cases = {
        "missing data": ([*base, str(tmp_path / "o1"), "--train_data_dir", str(tmp_path / "nope")], "does not exist"),
        "no images": ([*base, str(tmp_path / "o2"), "--train_data_dir", str(tmp_path / "empty")], "holds no"),
        "teacher path": ([*base, str(tmp_path / "o3"), "--teacher", str(tmp_path / "no_teacher")], "does not exist"),
        "resolution": ([*base, str(tmp_path / "o4"), "--resolution_schedule", "100"], "multiple of 8"),
        "lpips": ([*base, str(tmp_path / "o5"), "--lpips_weight", "0.1"], "lpips"),
    }
    for name, (argv, message) in cases.items():
        code, err = _cli(argv, capsys)
        assert code == 2, name
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and message in lines[0], (name, err)
        assert not (Path(argv[argv.index("--output_dir") + 1]) / "checkpoints").exists(), name


# ------------------------------------------------------------------------------------------ cached teacher targets


def test_cached_targets_crop_on_the_latent_grid_and_match_the_teacher(image_folder, teacher_dir, tmp_path):
    """A cached crop's target equals the teacher's latents of the whole image at that place (flipped: of the mirror)."""
    from diffusers_litevae.caching.preprocess import pixels_to_model_input, preprocess_image
    from diffusers_litevae.training.targets import CachedTargetDataset, prepare_teacher_latents

    teacher = load_teacher(str(teacher_dir))
    paths = [p for p in find_images(image_folder) if p.suffix == ".png"]
    targets = prepare_teacher_latents(
        str(tmp_path / "targets"), teacher, str(image_folder), paths, RESOLUTION, flip=True, progress=False
    )
    dataset = CachedTargetDataset(paths, targets, flip=True)
    seen_flips = set()
    for seed in range(8):
        index = seed % len(paths)
        sample = dataset[(index, RESOLUTION, seed)]
        assert sample["pixel_values"].shape == (3, RESOLUTION, RESOLUTION)
        assert sample["teacher_mean"].shape == (4, RESOLUTION // 8, RESOLUTION // 8)
        pixels, _ = preprocess_image(str(paths[index]), targets.transform, "")
        whole = pixels_to_model_input(pixels)
        for flipped in (False, True):
            image = whole.flip(-1) if flipped else whole
            # Find the crop inside the (possibly mirrored) whole image: it must start on the 8 px grid.
            match = [
                (top, left)
                for top in range(0, image.shape[1] - RESOLUTION + 1, 8)
                for left in range(0, image.shape[2] - RESOLUTION + 1, 8)
                if torch.equal(image[:, top : top + RESOLUTION, left : left + RESOLUTION], sample["pixel_values"])
            ]
            if match:
                break
        assert match, "the crop is not on the latent grid of the cached image"
        seen_flips.add(flipped)
        top, left = match[0]
        with torch.no_grad():
            mean, logvar = teacher.encode(image[None])
        expected = mean[0, :, top // 8 : (top + RESOLUTION) // 8, left // 8 : (left + RESOLUTION) // 8]
        torch.testing.assert_close(sample["teacher_mean"], expected, atol=1e-5, rtol=1e-5)
        assert sample["teacher_logvar"] is not None  # a Gaussian teacher: its log-variance is a target too
    assert seen_flips == {False, True}


def test_distill_from_cached_targets_never_runs_the_teacher_encoder(image_folder, teacher_dir, tmp_path, monkeypatch):
    """With the reconstruction losses off no teacher encoder runs in a training step; the run still learns."""
    from diffusers_litevae.training import teachers as teachers_module

    calls = {"encode": 0}
    original = teachers_module.DiffusersVAETeacher.encode

    def counting_encode(self, images):
        calls["encode"] += 1
        return original(self, images)

    monkeypatch.setattr(teachers_module.DiffusersVAETeacher, "encode", counting_encode)
    config = _config(
        image_folder,
        teacher_dir,
        tmp_path / "out",
        teacher_latents=str(tmp_path / "targets"),
        reconstruction_weight=0.0,
        wavelet_weight=0.0,
        gaussian_weight=0.0,
    )
    result = distill(config)
    # Validation encodes the held-out images with the teacher once (its reference); training adds nothing.
    assert calls["encode"] == 2, calls
    first, last = result["curve"][0], result["curve"][-1]
    assert last["latent_mse"] <= 0.5 * first["latent_mse"], (first, last)
    # A second run reuses the cache: nothing is encoded again.
    from diffusers_litevae.caching.index import LAST_RUN_NAME

    before = json.loads((tmp_path / "targets" / LAST_RUN_NAME).read_text())
    distill(
        _config(
            image_folder, teacher_dir, tmp_path / "out2", teacher_latents=str(tmp_path / "targets"), max_train_steps=2
        )
    )
    after = json.loads((tmp_path / "targets" / LAST_RUN_NAME).read_text())
    assert after.get("num_encoded", 0) == 0, (before, after)


def test_cached_target_errors_before_training(image_folder, teacher_dir, tmp_path, capsys):
    """Another teacher, other preprocessing, or missing images: one error line and no training output."""
    base = [
        "--teacher",
        str(teacher_dir),
        "--train_data_dir",
        str(image_folder),
        "--student",
        "S",
        "--resolution",
        str(RESOLUTION),
        "--max_train_steps",
        "1",
        "--num_validation_images",
        "2",
        "--no-progress_bar",
    ]
    targets = tmp_path / "targets"
    code, err = _cli([*base, "--teacher_latents", str(targets), "--output_dir", str(tmp_path / "ok")], capsys)
    assert code == 0, err
    other_teacher = tmp_path / "other_teacher"
    tiny_autoencoder_kl(seed=3).save_pretrained(other_teacher)
    partial = tmp_path / "partial"
    subset = tmp_path / "subset"
    (subset / "a").mkdir(parents=True)
    for path in sorted((image_folder / "a").glob("*.png"))[:3]:
        (subset / "a" / path.name).write_bytes(path.read_bytes())
    code, err = _cli(
        [*base[:3], str(subset), *base[4:], "--teacher_latents", str(partial), "--output_dir", str(tmp_path / "p")],
        capsys,
    )
    assert code == 0, err
    cases = {
        "teacher": (["--teacher", str(other_teacher), "--teacher_latents", str(targets)], "another teacher"),
        "preprocessing": (["--resolution", "48", "--teacher_latents", str(targets)], "other preprocessing"),
        "missing": (
            ["--teacher_latents", str(partial), "--no-build_teacher_latents"],
            "missing from --teacher_latents",
        ),
        "border": (["--teacher_latents", str(targets), "--teacher_latents_border", "2"], "--teacher_latents_border"),
    }
    for name, (extra, message) in cases.items():
        output_dir = tmp_path / f"bad_{name}"
        code, err = _cli([*base, *extra, "--output_dir", str(output_dir)], capsys)
        assert code == 2, (name, err)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and message in lines[0], (name, err)
        assert not (output_dir / "checkpoints").exists(), name


# --------------------------------------------------------------------------------- training at the sizes users encode


def test_multiscale_crops_cover_the_scale_they_draw():
    """Scale 1 crops the photo's own pixels; scale s takes a region 1/s wider, downscaled; small images clip it."""
    width = 400
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.float32), (300, 1))  # value = horizontal position
    image = Image.fromarray(np.stack([ramp] * 3, axis=-1).round().astype(np.uint8))

    def horizontal_span(crop: torch.Tensor) -> float:  # the fraction of the image's width the crop covers
        row = (crop[0].mean(0) + 1) / 2
        return float(row.max() - row.min())

    native = random_crop_flip(image, 64, np.random.default_rng(0), flip=False)
    assert native.shape == (3, 64, 64) and horizontal_span(native) == pytest.approx(63 / (width - 1), abs=0.01)
    for scale in (0.5, 0.25):
        crop = random_crop_flip(image, 64, np.random.default_rng(0), flip=False, scale_range=(scale, scale))
        assert crop.shape == (3, 64, 64)
        assert horizontal_span(crop) == pytest.approx(64 / scale / width, abs=0.02)
    # Scale 0.1 asks for a 640 px region of a 300 px tall image: clipped to the short side.
    clipped = random_crop_flip(image, 64, np.random.default_rng(0), flip=False, scale_range=(0.1, 0.1))
    assert horizontal_span(clipped) == pytest.approx(300 / width, abs=0.02)
    spans = [
        horizontal_span(random_crop_flip(image, 64, np.random.default_rng(s), flip=False, scale_range=(0.25, 1)))
        for s in range(40)
    ]  # log-uniform scales: spans from one crop width to four
    assert min(spans) < 0.25 and max(spans) > 0.5 and all(0.15 < span < 0.66 for span in spans)
    seeded = [random_crop_flip(image, 64, np.random.default_rng(7), scale_range=(0.25, 1)) for _ in range(2)]
    assert torch.equal(*seeded)


def test_crop_scale_parsing():
    from diffusers_litevae.training.data import parse_scale_range

    assert parse_scale_range("0.25,1") == (0.25, 1.0) and parse_scale_range("0.5") == (0.5, 0.5)
    for bad in ("0", "1.5", "1,0.5", "a,b", "0.1,0.2,0.3"):
        with pytest.raises(TrainingInputError, match="--crop_scales"):
            parse_scale_range(bad)


def test_schedule_with_mixed_sizes_and_a_final_phase():
    schedule = ResolutionSchedule.parse("32/64:4,64")
    assert [schedule.resolution_at(s) for s in range(6)] == [32, 64, 32, 64, 64, 64]
    # Equal pixels per step in the mixed phase; the final phase takes the full batch at its one size.
    assert [schedule.batch_size_at(s, 8) for s in range(6)] == [8, 2, 8, 2, 8, 8]
    assert schedule.sizes == (32, 64) and str(schedule) == "32/64:4,64"
    sampler = StepIndexedBatchSampler(10, 8, schedule, seed=1, end_step=6)
    assert [(len(batch), batch[0][1]) for batch in sampler] == [(8, 32), (2, 64), (8, 32), (2, 64), (8, 64), (8, 64)]
    with pytest.raises(TrainingInputError, match="multiple of 8"):
        ResolutionSchedule.parse("32/60:4,64")


def test_resume_across_a_phase_switch(image_folder, teacher_dir, tmp_path, monkeypatch):
    """killed at step 2 of a mixed-size phase and resumed with `latest`, a run crosses into its final phase and ends
    at the same weights and image count as an uninterrupted one."""
    common = dict(
        resolution_schedule="16/32:3,32",
        crop_scales="0.5,1",
        max_train_steps=5,
        checkpointing_steps=2,
        validation_steps=100,
        train_batch_size=4,
        num_grid_images=0,
        latent_stats_weight=1.0,
        low_frequency_weight=1.0,
        low_frequency_pool=4,
    )
    straight = distill(_config(image_folder, teacher_dir, tmp_path / "straight", **common))
    _distill_killed_after_checkpoint(_config(image_folder, teacher_dir, tmp_path / "resumed", **common), 2, monkeypatch)
    resumed = distill(
        _config(image_folder, teacher_dir, tmp_path / "resumed", **common, resume_from_checkpoint="latest")
    )
    # Steps 0-2 at 16/32/16 px (4, 1, 4 images), then 32 px with the full batch.
    assert resumed["final_metrics"]["images_seen"] == straight["final_metrics"]["images_seen"] == 4 + 1 + 4 + 4 + 4
    assert [e["resolution"] for e in straight["loss_history"]] == [32]  # logged at step 5, in the final phase
    name = "diffusion_pytorch_model.safetensors"
    first, second = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=1e-5, atol=1e-6, msg=key)


def test_init_from_starts_from_a_distilled_encoder(distilled, image_folder, teacher_dir, tmp_path):
    folder, _ = distilled
    start = AutoencoderLite.from_pretrained(folder)
    config = _config(
        image_folder, teacher_dir, tmp_path / "fine", init_from=str(folder), student="B", student_config=None,
        max_train_steps=1, learning_rate=1e-12, lr_warmup_steps=0, validation_steps=100, num_grid_images=0,
    )  # fmt: skip
    result = distill(config)
    tuned = AutoencoderLite.from_pretrained(tmp_path / "fine")
    assert result["student"]["init_from"] == str(folder)
    # The architecture came from the model (not the B preset) and the weights are its weights, one tiny step on.
    assert tuned.config.encoder_feature_channels == start.config.encoder_feature_channels
    for key, value in start.encoder.state_dict().items():
        torch.testing.assert_close(tuned.encoder.state_dict()[key], value, rtol=0, atol=1e-6)
    with pytest.raises(TrainingInputError, match="not a LiteVAE model"):
        distill(_config(image_folder, teacher_dir, tmp_path / "bad", init_from=str(teacher_dir), student_config=None))
    other = tmp_path / "other-latents"
    AutoencoderLite.from_preset("S", latent_channels=8).save_pretrained(other)
    with pytest.raises(TrainingInputError, match="latent channels"):
        distill(_config(image_folder, teacher_dir, tmp_path / "bad2", init_from=str(other), student_config=None))


def test_size_losses_see_offsets_and_colour_casts():
    from diffusers_litevae.training.losses import latent_statistics_loss, low_frequency_loss

    torch.manual_seed(0)
    latents = torch.randn(2, 4, 8, 8)
    assert latent_statistics_loss(latents, latents) < 1e-9
    shifted = latents + torch.tensor([0.5, 0.0, 0.0, 0.0]).view(1, 4, 1, 1)  # one channel off by 0.5 everywhere
    assert latent_statistics_loss(shifted, latents) == pytest.approx(0.25 / 4, rel=1e-4)
    assert latent_statistics_loss(latents * 2, latents) > 0.1  # contrast: the std term
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    cast = image + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)
    assert low_frequency_loss(cast, image, 8) == pytest.approx(0.4 / 3, rel=1e-4)
    checker = torch.ones(1, 3, 32, 32)
    checker[..., ::2, :] = -1  # pure detail: averages out over the window
    assert low_frequency_loss(image + 0.1 * checker, image, 8) < 1e-6


def test_several_folders_with_repeats(image_folder, tmp_path):
    from diffusers_litevae.training.data import prepare_data

    extra = tmp_path / "hires"
    for index, image in enumerate(_smooth_images(2, 64, 80, seed=9)):
        _save_png(image, extra / f"big_{index}.png")
    config = DistillConfig(teacher="unused", train_data_dir=[str(image_folder), str(extra)], num_validation_images=2)
    assert prepare_data(config).num_train_images == 14 - 2 + 2  # 14 files (one corrupt), 2 held out, 2 more
    config.train_data_repeats = [1, 3]
    data = prepare_data(config)
    assert data.num_train_images == 12 + 6 and sum("big_0" in data.source.name(i) for i in range(18)) == 3
    config.train_data_repeats = [1]
    with pytest.raises(TrainingInputError, match="one positive integer per"):
        distill(config)


def test_distill_compiles_student_and_teacher_where_the_policy_says(image_folder, teacher_dir, tmp_path, monkeypatch):
    """--compile defaults to the shared policy (on for CUDA, mocked here); --no-compile keeps eager."""
    import diffusers_litevae.training.distillation as distillation_module

    asked, compiled = [], []
    monkeypatch.setattr(distillation_module, "resolve_compile", lambda flag, device: asked.append(flag) or flag is None)
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kwargs: compiled.append((type(self).__name__, kwargs))
    )
    common = dict(max_train_steps=1, validation_steps=100, num_grid_images=0)
    distill(_config(image_folder, teacher_dir, tmp_path / "auto", **common))
    assert asked == [None]
    assert ("LiteVAEEncoder", {"mode": None, "dynamic": False}) in compiled  # the student, static shapes
    assert {"Encoder", "Decoder"} <= {name for name, _ in compiled}  # the teacher's encoder and decoder
    compiled.clear()
    distill(_config(image_folder, teacher_dir, tmp_path / "eager", compile=False, **common))
    assert asked[-1] is False and compiled == []


def test_training_reads_16_bit_and_rotated_photos_as_the_other_commands_do(tmp_path):
    """The training loader shares the cache's and eval's reading: EXIF orientation, 16-bit greyscale scaled."""
    grey = np.linspace(0, 65535, 32 * 48, dtype=np.uint16).reshape(32, 48)
    Image.fromarray(grey).save(tmp_path / "deep.png")  # uint16: mode I;16
    wide = Image.new("RGB", (48, 32), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    wide.save(tmp_path / "rotated.jpg", exif=exif)
    source = ImageFiles([tmp_path / "deep.png", tmp_path / "rotated.jpg"])
    deep = np.asarray(source.load(0))
    assert deep.shape == (32, 48, 3) and deep.min() == 0 and deep.max() == 255 and 120 < deep.mean() < 135
    assert source.load(1).size == (32, 48)  # upright: portrait
