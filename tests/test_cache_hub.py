"""A latent cache on the Hub: ``litevae push-cache`` uploads it as a dataset repo with its card, and
``LatentDataset("owner/name")`` downloads and opens one. ``HfApi`` is ``create_autospec(HfApi)`` and a local copy of
the cache stands in for ``snapshot_download``; ``HF_HUB_OFFLINE=1`` (conftest) keeps the network out."""

from __future__ import annotations

import shutil
from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import HfApi

from diffusers_litevae.caching import LatentDataset, cache_latents
from diffusers_litevae.caching.index import CacheInputError
from diffusers_litevae.cli import main
from diffusers_litevae.testing_utils import save_png, smooth_images, tiny_autoencoder_lite

REPO_ID = "someone/tiny-latents"
COMMAND = "litevae cache-latents --train_data_dir images --vae tiny --output_dir latents --resolution 64"


@pytest.fixture
def cache(tmp_path) -> Path:
    images = smooth_images(3, 64, 64, seed=0)
    for i, image in enumerate(images):
        save_png(image if i else image[:, :48], tmp_path / "images" / f"{i}.png")  # two buckets
    root = tmp_path / "latents"
    cache_latents(
        tmp_path / "images", tiny_autoencoder_lite(seed=0), root, resolution=64, bucket_step=8, num_workers=0,
        progress=False, command=COMMAND,
    )  # fmt: skip
    return root


@pytest.fixture
def api_class(monkeypatch):
    api_class = mock.create_autospec(HfApi)
    monkeypatch.setattr("huggingface_hub.HfApi", api_class)
    return api_class


def test_push_cache_uploads_the_folder_as_a_dataset_with_its_card(cache, api_class, capsys):
    assert main(["push-cache", str(cache), "--repo_id", REPO_ID, "--token", "hf_test", "--private"]) == 0
    api = api_class.return_value
    api.create_repo.assert_called_once_with(repo_id=REPO_ID, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO_ID and kwargs["repo_type"] == "dataset" and kwargs["folder_path"] == str(cache)
    assert ".cache-latents.lock" in kwargs["ignore_patterns"]
    assert f"https://huggingface.co/datasets/{REPO_ID}" in capsys.readouterr().out

    card = (cache / "README.md").read_text()
    manifest_vae = LatentDataset(cache).manifest["vae"]
    assert card.startswith("---\n") and "latent-cache" in card
    assert manifest_vae["class"] in card and manifest_vae["weights_hash"] in card
    assert f"scaling factor | {manifest_vae['scaling_factor']}" in card
    assert f"shift factor | {manifest_vae['shift_factor']}" in card
    assert '"resolution": 64' in card  # the transform
    assert "3 samples in 2 buckets" in card and "| 64 x 64 | 2 |" in card
    assert COMMAND in card


def test_a_large_cache_goes_up_with_upload_large_folder_where_the_hub_client_has_it(cache, api_class):
    assert main(["push-cache", str(cache), "--repo_id", REPO_ID, "--token", "hf_test", "--large"]) == 0
    api = api_class.return_value
    if hasattr(HfApi, "upload_large_folder"):  # huggingface_hub < 2
        api.upload_large_folder.assert_called_once()
        assert api.upload_large_folder.call_args.kwargs["repo_type"] == "dataset"
        api.upload_folder.assert_not_called()
    else:  # from huggingface_hub 2 on, upload_folder uploads large folders in resumable chunks itself
        api.upload_folder.assert_called_once()
        assert api.upload_folder.call_args.kwargs["repo_type"] == "dataset"


def test_push_cache_refuses_a_folder_that_is_not_a_cache_before_any_network_call(tmp_path, api_class, capsys):
    assert main(["push-cache", str(tmp_path), "--repo_id", REPO_ID, "--token", "hf_test"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("litevae push-cache: error:") and "not a finished" in lines[0]
    api_class.assert_not_called()


def test_latent_dataset_by_repo_id_downloads_the_revision_and_refuses_another_vae(cache, tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot"
    shutil.copytree(cache, snapshot)  # what snapshot_download would leave in the Hub cache
    download = mock.Mock(return_value=str(snapshot))
    monkeypatch.setattr("huggingface_hub.snapshot_download", download)

    dataset = LatentDataset(REPO_ID, revision="v1", vae=tiny_autoencoder_lite(seed=0))
    download.assert_called_once_with(REPO_ID, repo_type="dataset", revision="v1", token=None)
    assert len(dataset) == 3 and dataset.root == snapshot.resolve()
    assert dataset[0]["latents"].shape[0] == LatentDataset(cache)[0]["latents"].shape[0]

    with pytest.raises(CacheInputError, match="made by another VAE .*weights_hash"):
        LatentDataset(REPO_ID, revision="v1", vae=tiny_autoencoder_lite(seed=1))
    assert LatentDataset(cache, vae=tiny_autoencoder_lite(seed=0)).root == cache.resolve()  # local folders too
