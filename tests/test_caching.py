"""Latent caching: buckets, round trip against vae.encode, incremental updates, bad inputs, readers, CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from diffusers_litevae.caching import (
    BucketBatchSampler,
    IncompatibleCacheError,
    LatentDataset,
    TransformConfig,
    assign_bucket,
    cache_latents,
    load_vae,
    make_buckets,
    pixels_to_model_input,
    plan_crop,
    preprocess_image,
)
from diffusers_litevae.testing_utils import tiny_autoencoder_kl, tiny_autoencoder_lite

# Small images in several aspect ratios: (width, height).
SIZES = {
    "square.png": (64, 64),
    "wide.png": (128, 64),
    "tall.png": (64, 128),
    "sub/panorama.png": (150, 50),
    "sub/photo.jpg": (96, 72),
    "sub/deep/square2.png": (70, 70),
}
RES = dict(resolution=64, bucket_step=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def write_image(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


def make_folder(root: Path, sizes: dict = SIZES, captions: bool = True) -> Path:
    for i, (name, (width, height)) in enumerate(sizes.items()):
        write_image(root / name, width, height, seed=i)
        if captions:
            (root / name).with_suffix(".txt").write_text(f"caption for {name}")
    return root


def entries(cache: Path) -> dict[str, dict]:
    lines = (cache / "index.jsonl").read_text().splitlines()[1:]
    return {row["id"]: row for row in map(json.loads, lines)}


@pytest.fixture
def lite():
    return tiny_autoencoder_lite(seed=0)


# ------------------------------------------------------------------------------------------------ buckets


def test_make_buckets_matches_sdxl_layout():
    buckets = make_buckets(1024, 64, max_aspect_ratio=4.0)
    for expected in [(1024, 1024), (768, 1344), (1344, 768), (832, 1216), (512, 2048), (2048, 512)]:
        assert expected in buckets
    for height, width in buckets:
        assert height % 64 == 0 and width % 64 == 0
        assert height * width <= 1024 * 1024
        assert max(height, width) / min(height, width) <= 4.0
    aspects = [w / h for h, w in buckets]
    assert aspects == sorted(aspects)
    with pytest.raises(ValueError, match="multiple of the bucket step"):
        make_buckets(1000, 64)


def test_assign_bucket_and_crop_plan():
    buckets = make_buckets(64, 8)
    assert assign_bucket(64, 64, buckets) == (64, 64)
    assert assign_bucket(128, 64, buckets) == (40, 88)  # 2:1 -> 88/40 = 2.2 is nearer (in log) than 80/48
    assert assign_bucket(64, 128, buckets) == (88, 40)
    plan = plan_crop(128, 64, (40, 88))
    assert plan.resized_size == (44, 88) and plan.crop_ltrb == (0, 2, 88, 42) and plan.original_size == (64, 128)
    # Random crops are a function of (seed, sample id): same in every process, different across ids.
    first = plan_crop(300, 100, (64, 64), crop="random", seed=1, sample_id="a.png")
    assert first == plan_crop(300, 100, (64, 64), crop="random", seed=1, sample_id="a.png")
    lefts = {plan_crop(300, 100, (64, 64), crop="random", seed=1, sample_id=f"{i}.png").crop_ltrb[0] for i in range(20)}
    assert len(lefts) > 5 and all(0 <= left <= 192 - 64 for left in lefts)


def test_images_land_in_their_buckets_and_batches_share_a_shape(tmp_path, lite):
    """several aspect ratios -> the right buckets; the batch sampler yields same-shape batches."""
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    cache_latents(folder, lite, cache, num_workers=0, batch_size=4, progress=False, **RES)
    index = entries(cache)
    buckets = make_buckets(64, 8)
    assert set(index) == set(SIZES)
    for name, (width, height) in SIZES.items():
        assert index[name]["bucket"] == list(assign_bucket(width, height, buckets))
        assert index[name]["original_size"] == [height, width]
    assert index["wide.png"]["bucket"] == [40, 88] and index["tall.png"]["bucket"] == [88, 40]
    assert index["sub/panorama.png"]["bucket"] == [32, 104]  # 3:1 -> 104/32 = 3.25 is log-nearer than 96/40 = 2.4
    dataset = LatentDataset(cache, latent_sampling="mean")
    sampler = BucketBatchSampler(dataset, batch_size=2, shuffle=True, seed=3)
    loader = DataLoader(dataset, batch_sampler=sampler)
    seen = []
    for batch in loader:
        assert batch["latents"].shape[-2:] == tuple(batch["target_size"][0] // 8)
        assert (batch["target_size"] == batch["target_size"][0]).all()
        seen.extend(batch["sample_id"])
    assert sorted(seen) == sorted(SIZES)


def test_bucket_batch_sampler_shuffling_drop_last_and_replicas():
    buckets = [(64, 64)] * 7 + [(40, 88)] * 5 + [(88, 40)] * 2
    sampler = BucketBatchSampler(buckets, batch_size=3, shuffle=True, seed=0)
    epoch0 = list(sampler)
    assert sorted(i for batch in epoch0 for i in batch) == list(range(14))
    for batch in epoch0:
        assert len({buckets[i] for i in batch}) == 1
    assert list(sampler) == epoch0  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    dropped = list(BucketBatchSampler(buckets, batch_size=3, shuffle=False, drop_last=True))
    assert dropped == [[0, 1, 2], [3, 4, 5], [7, 8, 9]]
    ranks = [list(BucketBatchSampler(buckets, batch_size=3, seed=5, num_replicas=2, rank=r)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 6 batches: 3 each
    covered = sorted(i for batches in ranks for batch in batches for i in batch)
    assert covered == list(range(14))


# ------------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_round_trip_equals_vae_encode(tmp_path, lite, dtype):
    """what LatentDataset returns is vae.encode of the preprocessed image, to the storage precision."""
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    transform = TransformConfig(crop="random", seed=7, flip=True, **RES)
    cache_latents(
        folder,
        lite,
        cache,
        transform=transform,
        dtype=dtype,
        num_workers=0,
        batch_size=3,
        samples_per_shard=2,
        progress=False,
    )
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == "fp32" else dict(rtol=2**-8, atol=1e-5)
    dataset = LatentDataset(cache, latent_sampling="mean")
    assert len(dataset) == len(SIZES)
    scaling = lite.config.scaling_factor
    for i in range(len(dataset)):
        sample_id = dataset.sample_id(i)
        pixels, plan = preprocess_image(str(folder / sample_id), transform, sample_id)
        with torch.no_grad():
            posterior = lite.encode(pixels_to_model_input(pixels[None])).latent_dist
            flipped = lite.encode(pixels_to_model_input(pixels[None]).flip(-1)).latent_dist
        mean, std = dataset.raw_moments(i)
        torch.testing.assert_close(mean, posterior.mean[0], **tolerance)
        torch.testing.assert_close(std, posterior.std[0], **tolerance)
        torch.testing.assert_close(dataset.raw_moments(i, flipped=True)[0], flipped.mean[0], **tolerance)
        item = dataset[i]
        torch.testing.assert_close(item["latents"], posterior.mean[0] * scaling, **tolerance)
        assert item["crop_ltrb"].tolist() == list(plan.crop_ltrb)
        assert item["original_size"].tolist() == list(plan.original_size)
        assert item["caption"] == f"caption for {sample_id}"


def test_autoencoder_kl_with_shift_factor_and_fp16(tmp_path):
    """Any diffusers VAE: AutoencoderKL latents are shifted then scaled like the SD3/FLUX training scripts."""
    vae = tiny_autoencoder_kl(seed=1, scaling_factor=0.5, shift_factor=0.1)
    folder = make_folder(tmp_path / "images", {"a.png": (64, 64), "b.png": (72, 64)})
    cache = tmp_path / "cache"
    cache_latents(folder, vae, cache, dtype="fp16", num_workers=0, progress=False, bucketing=False, resolution=64)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["vae"]["class"] == "AutoencoderKL" and manifest["vae"]["shift_factor"] == 0.1
    dataset = LatentDataset(cache, latent_sampling="mean")
    transform = TransformConfig(bucketing=False, resolution=64)
    for i in range(len(dataset)):
        pixels, _ = preprocess_image(str(folder / dataset.sample_id(i)), transform, dataset.sample_id(i))
        with torch.no_grad():
            mean = vae.encode(pixels_to_model_input(pixels[None])).latent_dist.mean[0]
        torch.testing.assert_close(dataset[i]["latents"], (mean - 0.1) * 0.5, rtol=2**-10, atol=1e-4)
        torch.testing.assert_close(dataset.denormalize_latents(dataset[i]["latents"]), mean, rtol=2**-10, atol=1e-4)
    latents = dataset[0]["latents"]
    with pytest.warns(DeprecationWarning, match="normalize_latents"):
        assert torch.equal(dataset.scale_latents(latents), dataset.normalize_latents(latents))
    with pytest.warns(DeprecationWarning, match="denormalize_latents"):
        assert torch.equal(dataset.unscale_latents(latents), dataset.denormalize_latents(latents))


def test_autoencoder_tiny_stores_deterministic_latents(tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    folder = make_folder(tmp_path / "images", {"a.png": (64, 64)})
    cache_latents(folder, vae, tmp_path / "cache", num_workers=0, progress=False, dtype="fp32", **RES)
    dataset = LatentDataset(tmp_path / "cache", latent_sampling="sample")  # nothing to sample: returns the latents
    assert not dataset.has_std
    pixels, _ = preprocess_image(str(folder / "a.png"), TransformConfig(**RES), "a.png")
    with torch.no_grad():
        expected = vae.encode(pixels_to_model_input(pixels[None])).latents[0]
    torch.testing.assert_close(dataset[0]["latents"], expected * vae.config.scaling_factor, rtol=1e-5, atol=1e-5)


def test_metadata_follows_sample_id_under_shuffling(tmp_path, lite):
    """captions and metadata travel with their latent, with shuffling and DataLoader workers."""
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    cache_latents(folder, lite, cache, num_workers=2, batch_size=2, samples_per_shard=3, progress=False, **RES)
    reference = LatentDataset(cache, latent_sampling="mean")
    expected = {reference.sample_id(i): reference[i]["latents"] for i in range(len(reference))}
    dataset = LatentDataset(cache, latent_sampling="mean")
    for seed in (0, 1):
        sampler = BucketBatchSampler(dataset, batch_size=2, shuffle=True, seed=seed)
        for batch in DataLoader(dataset, batch_sampler=sampler, num_workers=2):
            for k, sample_id in enumerate(batch["sample_id"]):
                assert batch["caption"][k] == f"caption for {sample_id}"
                width, height = SIZES[sample_id]
                assert batch["original_size"][k].tolist() == [height, width]
                assert torch.equal(batch["latents"][k], expected[sample_id])


def test_posterior_sampling_is_reproducible(tmp_path, lite):
    folder = make_folder(tmp_path / "images", {"a.png": (64, 64), "b.png": (64, 64)})
    cache = tmp_path / "cache"
    cache_latents(folder, lite, cache, num_workers=0, progress=False, flip=True, dtype="fp32", **RES)
    mean, std = LatentDataset(cache).raw_moments(0)
    # An explicit generator: exactly mean + std * randn(generator), scaled.
    drawn = LatentDataset(cache, generator=torch.Generator().manual_seed(5))[0]["latents"]
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(drawn, (mean + std * noise) * lite.config.scaling_factor)
    # A seed: per (epoch, index), independent of order and workers; new draws each epoch.
    a, b = LatentDataset(cache, seed=3), LatentDataset(cache, seed=3)
    assert torch.equal(a[1]["latents"], b[1]["latents"]) and torch.equal(a[0]["latents"], b[0]["latents"])
    b.set_epoch(1)
    assert not torch.equal(a[0]["latents"], b[0]["latents"])
    # Flips: the flipped latent and the mirrored crop box.
    flips = LatentDataset(cache, latent_sampling="mean", seed=0, flip_probability=1.0)[0]
    assert flips["flipped"]
    torch.testing.assert_close(
        flips["latents"], LatentDataset(cache).raw_moments(0, flipped=True)[0] * lite.config.scaling_factor
    )
    with pytest.raises(ValueError, match="cached without"):
        make_folder(tmp_path / "other", {"c.png": (64, 64)})
        cache_latents(tmp_path / "other", lite, tmp_path / "noflip", num_workers=0, progress=False, **RES)
        LatentDataset(tmp_path / "noflip", flip_probability=0.5)


# ------------------------------------------------------------------------------------------------ incremental


def test_incremental_updates(tmp_path, lite):
    """no repeated work; only changed/new images encoded; removed ones dropped."""
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    options = dict(num_workers=0, batch_size=2, samples_per_shard=2, progress=False, **RES)
    first = cache_latents(folder, lite, cache, **options)
    assert first.num_encoded == len(SIZES) and first.num_samples == len(SIZES)
    shards_before = sorted(p.relative_to(cache) for p in cache.rglob("*.safetensors"))

    second = cache_latents(folder, lite, cache, **options)
    assert second.num_encoded == 0 and second.encoded_ids == [] and second.num_unchanged == len(SIZES)
    assert sorted(p.relative_to(cache) for p in cache.rglob("*.safetensors")) == shards_before

    write_image(folder / "wide.png", 128, 64, seed=99)  # new content
    stat = os.stat(folder / "square.png")
    os.utime(folder / "square.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    (folder / "tall.txt").write_text("a new caption")
    third = cache_latents(folder, lite, cache, **options)
    assert third.encoded_ids == ["wide.png"]
    assert third.num_metadata_updates == 2  # the touched image (stat) and the edited caption
    dataset = LatentDataset(cache, latent_sampling="mean")
    assert dataset[dataset.index_of("tall.png")]["caption"] == "a new caption"
    pixels, _ = preprocess_image(str(folder / "wide.png"), TransformConfig(**RES), "wide.png")
    with torch.no_grad():
        expected = lite.encode(pixels_to_model_input(pixels[None])).latent_dist.mean[0]
    torch.testing.assert_close(dataset.raw_moments(dataset.index_of("wide.png"))[0], expected, rtol=2**-8, atol=1e-5)

    (folder / "sub" / "photo.jpg").unlink()
    write_image(folder / "new.png", 64, 64, seed=50)
    fourth = cache_latents(folder, lite, cache, **options)
    assert fourth.encoded_ids == ["new.png"] and fourth.num_removed == 1
    index = entries(cache)
    assert "sub/photo.jpg" not in index and "new.png" in index and len(index) == len(SIZES)
    # Superseded shards are deleted; every shard left holds at least one live sample.
    live = {row["shard"] for row in index.values()}
    assert {p.relative_to(cache).as_posix() for p in cache.rglob("*.safetensors")} == live


def test_changed_settings_are_refused(tmp_path, lite):
    folder = make_folder(tmp_path / "images", {"a.png": (64, 64)})
    cache = tmp_path / "cache"
    cache_latents(folder, lite, cache, num_workers=0, progress=False, **RES)
    with pytest.raises(IncompatibleCacheError, match=r"transform\.resolution: cache has 64, this run has 128"):
        cache_latents(folder, lite, cache, num_workers=0, progress=False, resolution=128, bucket_step=8)
    with pytest.raises(IncompatibleCacheError, match=r"latents\.dtype"):
        cache_latents(folder, lite, cache, num_workers=0, progress=False, dtype="fp16", **RES)
    with pytest.raises(IncompatibleCacheError, match=r"vae\.weights_hash"):
        cache_latents(folder, tiny_autoencoder_lite(seed=1), cache, num_workers=0, progress=False, **RES)
    with pytest.raises(IncompatibleCacheError, match=r"vae\.class"):
        cache_latents(folder, tiny_autoencoder_kl(), cache, num_workers=0, progress=False, **RES)
    # The same weights saved elsewhere are the same VAE: accepted, nothing to do.
    lite.save_pretrained(tmp_path / "copy")
    assert cache_latents(folder, str(tmp_path / "copy"), cache, num_workers=0, progress=False, **RES).num_encoded == 0
    # Shards whose settings are unknown are never adopted.
    (cache / "manifest.json").unlink()
    with pytest.raises(IncompatibleCacheError, match="no manifest.json"):
        cache_latents(folder, lite, cache, num_workers=0, progress=False, **RES)


def test_cache_inside_the_image_folder_is_not_scanned(tmp_path, lite):
    folder = make_folder(tmp_path / "images", {"a.png": (64, 64), "b.png": (64, 64)})
    for _ in range(2):
        report = cache_latents(folder, lite, folder / "latents", num_workers=0, progress=False, **RES)
    assert report.num_samples == 2 and report.num_encoded == 0 and report.num_skipped_files == 0


def test_cli_skips_corrupt_and_non_image_files(tmp_path, lite, capsys):
    """a corrupt image and non-image files are skipped and reported; exit code 0; the rest cached."""
    from diffusers_litevae.cli import main

    folder = make_folder(tmp_path / "images", {"a.png": (64, 64), "b.jpg": (80, 64)})
    good = (folder / "b.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text-not-image.png").write_text("this is not a PNG")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    lite.save_pretrained(tmp_path / "vae")
    argv = [
        "cache-latents",
        "--train_data_dir",
        str(folder),
        "--vae",
        str(tmp_path / "vae"),
        "--output_dir",
        str(tmp_path / "cache"),
        "--resolution",
        "64",
        "--bucket_step",
        "8",
        "--num_workers",
        "1",
        "--no_progress",
    ]
    assert main(argv) == 0
    assert set(entries(tmp_path / "cache")) == {"a.png", "b.jpg"}
    errors = {
        row["sample_id"]: row for row in map(json.loads, (tmp_path / "cache" / "errors.jsonl").read_text().splitlines())
    }
    assert set(errors) == {"truncated.jpg", "text-not-image.png", "notes.pdf"}
    assert errors["notes.pdf"]["stage"] == "scan" and "not an image" in errors["notes.pdf"]["error"]
    assert errors["truncated.jpg"]["stage"] == "decode" and "truncated" in errors["truncated.jpg"]["error"]
    last = json.loads((tmp_path / "cache" / "last_run.json").read_text())
    assert last["num_failed"] == 2 and last["num_skipped_files"] == 1 and last["num_samples"] == 2
    # Unchanged failures are not retried (still reported); fixing the file caches it.
    assert main(argv) == 0
    assert len((tmp_path / "cache" / "errors.jsonl").read_text().splitlines()) == 3
    (folder / "truncated.jpg").write_bytes(good)
    assert main(argv) == 0
    assert set(entries(tmp_path / "cache")) == {"a.png", "b.jpg", "truncated.jpg"}

    # Bad input is a clear error (exit code 2) before any work: a settings mismatch, a missing folder, a size
    # the VAE cannot tile.
    def error_line() -> str:
        lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(lines) == 1, lines
        return lines[0]

    capsys.readouterr()
    assert main(argv[:-1] + ["--dtype", "fp32", "--no_progress"]) == 2
    assert "latents.dtype: cache has 'bf16', this run has 'fp32'" in error_line()
    assert main(["cache-latents", "--train_data_dir", str(tmp_path / "missing"), *argv[3:]]) == 2
    assert "does not exist" in error_line()
    other = ["--output_dir", str(tmp_path / "other"), "--resolution", "60", "--no_buckets"]
    assert main(argv[:5] + other) == 2
    assert "resolution=60 is not a multiple of the VAE's downsampling factor 8" in error_line()
    assert not (tmp_path / "other").exists()


def test_hub_dataset_source(tmp_path, lite):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (64 + 16 * i, 64), (40 * i, 100, 200)) for i in range(3)]
    dataset = datasets.Dataset.from_dict({"image": images, "text": ["red", "green", "blue"]})
    dataset = dataset.cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    cache = tmp_path / "cache"
    report = cache_latents(str(tmp_path / "saved"), lite, cache, num_workers=0, progress=False, **RES)
    assert report.num_encoded == 3
    loaded = LatentDataset(cache, latent_sampling="mean")
    captions = {loaded.sample_id(i).split("-")[0]: loaded[i]["caption"] for i in range(3)}
    assert captions == {"000000000": "red", "000000001": "green", "000000002": "blue"}
    # Re-running over the same rows (here: the in-memory Dataset object) encodes nothing.
    assert cache_latents(dataset, lite, cache, num_workers=0, progress=False, **RES).num_encoded == 0
    with pytest.raises(ValueError, match="no caption column 'prompt'"):
        cache_latents(dataset, lite, tmp_path / "other", num_workers=0, progress=False, caption_column="prompt", **RES)


def test_load_vae_picks_the_class_from_the_config(tmp_path, lite):
    from diffusers import AutoencoderKL

    lite.save_pretrained(tmp_path / "pipe" / "vae")
    tiny_autoencoder_kl().save_pretrained(tmp_path / "kl")
    assert type(load_vae(str(tmp_path / "pipe"), subfolder="vae")).__name__ == "AutoencoderLite"
    assert isinstance(load_vae(str(tmp_path / "kl")), AutoencoderKL)
    with pytest.raises(ValueError, match="unknown VAE class"):
        load_vae(str(tmp_path / "kl"), vae_class="NotAVae")
    # A saved pipeline folder: its vae/ is found without --vae_subfolder.
    assert type(load_vae(str(tmp_path / "pipe"))).__name__ == "AutoencoderLite"
    with pytest.raises(ValueError, match="does not exist"):
        load_vae(str(tmp_path / "nothing_here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a VAE folder"):
        load_vae(str(tmp_path / "empty"))


def test_the_same_vae_values_work_in_cache_latents_eval_and_distill(tmp_path, shared_dir, capsys):
    """One loader: a TAESD-family folder (TAEF2) is a valid --vae for cache-latents and eval
    and --teacher for distill."""
    from diffusers_litevae.cli import main
    from diffusers_litevae.training import load_teacher

    taef2 = shared_dir / "weights" / "taef2"
    images = tmp_path / "images"
    images.mkdir()
    for name in ("kodim03.png", "kodim15.png"):
        (images / name).write_bytes((shared_dir / "data" / "kodak24" / name).read_bytes())
    code = main(
        [
            "cache-latents",
            "--train_data_dir",
            str(images),
            "--vae",
            str(taef2),
            "--output_dir",
            str(tmp_path / "cache"),
            "--resolution",
            "64",
            "--no_buckets",
            "--num_workers",
            "0",
            "--no_progress",
            "--max_images",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    dataset = LatentDataset(tmp_path / "cache", latent_sampling="mean")
    assert len(dataset) == 1 and dataset[0]["latents"].shape == (32, 8, 8)
    assert dataset.manifest["vae"]["class"] == "TinyAutoencoder"
    code = main(
        [
            "eval",
            "--image_dir",
            str(images),
            "--vae",
            f"{taef2}:taef2",
            "--resolution",
            "64",
            "--skip_speed",
            "--grid_images",
            "0",
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    assert load_teacher(str(taef2)).latent_channels == 32
    capsys.readouterr()
    code = main(
        [
            "cache-latents",
            "--train_data_dir",
            str(images),
            "--vae",
            str(tmp_path / "nothing"),
            "--output_dir",
            str(tmp_path / "c2"),
        ]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "nothing" in lines[0]


def test_example_training_loop_runs(tmp_path, lite):
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    cache_latents(folder, lite, cache, num_workers=0, progress=False, flip=True, resolution=64, bucket_step=16)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import train_with_latent_cache
    finally:
        sys.path.pop(0)
    losses = train_with_latent_cache.main(
        ["--cache_dir", str(cache), "--max_train_steps", "4", "--train_batch_size", "2", "--unet_channels", "8", "16"]
    )
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_vae_identity_ignores_memory_format():
    """channels_last models (the fast layout on GPUs) hash to the same identity as contiguous ones."""
    from diffusers_litevae.caching.encode import vae_identity
    from diffusers_litevae.testing_utils import tiny_autoencoder_lite

    vae = tiny_autoencoder_lite()
    contiguous = vae_identity(vae)["weights_hash"]
    assert vae_identity(vae.to(memory_format=torch.channels_last))["weights_hash"] == contiguous
    assert vae_identity(tiny_autoencoder_lite(seed=1))["weights_hash"] != contiguous


def test_cache_latents_leaves_the_callers_vae_as_it_was(tmp_path, lite):
    """A pipeline's VAE passed in comes back unchanged: same dtype, memory format, mode and requires_grad."""
    lite = lite.to(torch.bfloat16).train()
    before = {name: tensor.clone() for name, tensor in lite.state_dict().items()}
    cache_latents(
        make_folder(tmp_path / "images"),
        lite,
        tmp_path / "cache",
        num_workers=0,
        progress=False,
        channels_last=True,
        **RES,
    )
    assert lite.training and all(p.requires_grad for p in lite.parameters())
    for name, tensor in lite.state_dict().items():
        assert tensor.dtype == torch.bfloat16 and tensor.is_contiguous(), name
        assert torch.equal(tensor, before[name]), name


def test_drop_last_warns_when_a_bucket_holds_less_than_one_batch():
    buckets = [(64, 64)] * 7 + [(40, 88)] * 5 + [(88, 40)] * 2
    with pytest.warns(UserWarning, match=r"1 of 3 buckets hold fewer samples than one batch \(88x40 \(2\)\)") as record:
        sampler = BucketBatchSampler(buckets, batch_size=3, drop_last=True)
    assert "5 of 14 samples are dropped" in str(record[0].message)  # 7 % 3 + 5 % 3 + 2
    assert sum(len(batch) for batch in sampler) == 9
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every bucket fills a batch, or nothing is dropped: no warning
        BucketBatchSampler([(64, 64)] * 6, batch_size=3, drop_last=True)
        BucketBatchSampler(buckets, batch_size=3, drop_last=False)


def test_the_readme_snippet_yields_batches_on_a_12_image_cache(tmp_path):
    """The README's training snippet, as written (batch 16), on a cache of 12 images in two buckets."""
    import re

    sizes = {f"{i:02d}.png": ((64, 64) if i % 2 else (64, 48)) for i in range(12)}
    make_folder(tmp_path / "images", sizes)
    cache = tmp_path / "latents"
    cache_latents(
        tmp_path / "images", tiny_autoencoder_lite(seed=0), cache, resolution=64, bucket_step=8, flip=True,
        num_workers=0, progress=False,
    )  # fmt: skip
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "BucketBatchSampler(" in block]
    namespace: dict = {}
    exec(snippet.replace('"./latents"', repr(str(cache))), namespace)  # noqa: S102 (the README's own code)
    batches = list(namespace["loader"])
    assert sum(len(batch["caption"]) for batch in batches) == 12 and len(batches) == 2
    assert "latents" in namespace  # the snippet's loop body ran


def test_caching_compiles_only_where_the_warm_up_pays_and_says_why():
    from diffusers_litevae.caching.planning import COMPILE_PAYS_FROM_IMAGES_PER_SHAPE, choose_compile

    enabled, reason = choose_compile(None, cuda=True, num_images=74, num_shapes=20)
    assert not enabled and "74 images over up to 20 input shapes" in reason
    enabled, _ = choose_compile(None, cuda=True, num_images=COMPILE_PAYS_FROM_IMAGES_PER_SHAPE * 20, num_shapes=20)
    assert enabled
    assert choose_compile(None, cuda=False, num_images=10**9, num_shapes=1)[0] is False
    assert choose_compile(True, cuda=False, num_images=1, num_shapes=50)[0] is True  # the user's flag decides
    assert choose_compile(False, cuda=True, num_images=10**9, num_shapes=1)[0] is False
