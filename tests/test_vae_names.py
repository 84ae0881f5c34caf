"""What a user types after --vae / --teacher: bundled models by name, a clear list when a name is unknown, and the
real cause when a Hub id cannot load because the Hub is switched off (HF_HUB_OFFLINE, set for every test)."""

from __future__ import annotations

import pytest

from diffusers_litevae import AutoencoderLite, list_pretrained, pretrained_path
from diffusers_litevae.cli import main
from diffusers_litevae.models import AutoencoderLiteTiny, TinyAutoencoder
from diffusers_litevae.testing_utils import tiny_autoencoder_lite
from diffusers_litevae.vae_io import VAELoadError, load_vae


def test_bundled_models_load_by_name():
    taef2 = load_vae("taef2")
    assert isinstance(taef2, TinyAutoencoder) and taef2.name_or_path == pretrained_path("taef2")
    lite = load_vae("litevae-s-taef2")
    assert isinstance(lite, AutoencoderLiteTiny) and lite.config.latent_channels == 32


def test_an_existing_folder_wins_over_a_bundled_name(tmp_path, monkeypatch):
    tiny_autoencoder_lite(seed=0).save_pretrained(tmp_path / "taef2")
    monkeypatch.chdir(tmp_path)
    assert isinstance(load_vae("taef2"), AutoencoderLite)


def test_an_unknown_name_lists_the_bundled_models(tmp_path, capsys):
    with pytest.raises(VAELoadError) as error:
        load_vae("taef3")
    message = str(error.value)
    assert all(name in message for name in list_pretrained()) and "folder" in message and "owner/name" in message
    code = main(["eval", "--vae", "taef3", "--output_dir", str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "litevae-s-taef2, taef2" in lines[0], lines


def test_a_hub_id_while_offline_names_the_cause(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for vae_class in (None, "AutoencoderLite"):  # config.json fetched by the loader, or by diffusers
        with pytest.raises(VAELoadError, match="HF_HUB_OFFLINE is set") as error:
            load_vae("someone/no-such-vae", vae_class=vae_class)
        assert "not in the local cache" in str(error.value)
    with pytest.raises(OSError, match="'someone/no-such-vae' is not in the local cache, and HF_HUB_OFFLINE is set"):
        AutoencoderLite.from_pretrained("someone/no-such-vae")
