"""A latent cache on the Hugging Face Hub, as a dataset repo.

- :func:`push_cache` (``litevae push-cache``): writes the cache's dataset card (``README.md``, rendered from
  ``cache_card_template.md``), then uploads the folder to a dataset repo.
- :func:`open_cache` (what ``LatentDataset("owner/name", revision=...)`` calls): a local folder as it is, a repo id
  downloaded with ``snapshot_download(repo_type="dataset")``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..settings import setting
from .index import INDEX_NAME, LAST_RUN_NAME, CacheIndex, CacheInputError, load_manifest
from .writer import LOCK_NAME, CacheLock, list_shard_files

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "LARGE_CACHE_BYTES",
    "PushCacheSettings",
    "cache_card",
    "check_cache_vae",
    "open_cache",
    "push_cache",
]

DEFAULT_COMMIT_MESSAGE = "Upload a latent cache with diffusers-litevae"
# Above this size a cache goes up with upload_large_folder: many commits, resumable, instead of one commit.
LARGE_CACHE_BYTES = 10 * 2**30
# What a caching run leaves that is no part of the cache: its lock, temporary files, per-process error lists.
UPLOAD_IGNORE = [LOCK_NAME, ".*.tmp-*", "**/.*.tmp-*", "errors.r*.partial.jsonl", ".cache/**"]
# The parts of a VAE's identity that decide its latents (name, subfolder and revision are where it was loaded from).
_VAE_KEYS = ("class", "config_hash", "weights_hash", "scaling_factor", "shift_factor", "latents_mean", "latents_std")


def _read_cache(root: Path) -> tuple[dict, CacheIndex]:
    manifest = load_manifest(root)
    if manifest is None or not (root / INDEX_NAME).is_file():
        raise CacheInputError(
            f"{str(root)!r} is not a finished latent cache (no manifest.json or index.jsonl): build it with "
            "`litevae cache-latents`."
        )
    index = CacheIndex.load(root, recover=False)
    if set(list_shard_files(root)) - index.known_shards:
        raise CacheInputError(
            f"{str(root)!r} holds shards of an unfinished caching run; run its cache-latents command again to finish "
            "it, then upload."
        )
    return manifest, index


def cache_card(root: str | os.PathLike, repo_id: str, license: str | None = None):
    """The ``huggingface_hub.DatasetCard`` of the cache in ``root``, to be uploaded as ``repo_id``."""
    from huggingface_hub import DatasetCard, DatasetCardData

    root = Path(root)
    manifest, index = _read_cache(root)
    last_run = json.loads((root / LAST_RUN_NAME).read_text()) if (root / LAST_RUN_NAME).is_file() else {}
    buckets = Counter(tuple(entry["bucket"]) for entry in index.entries.values())
    return DatasetCard.from_template(
        DatasetCardData(license=license, tags=["latent-cache", "diffusers-litevae", "diffusers"]),
        template_path=str(Path(__file__).with_name("cache_card_template.md")),
        repo_id=repo_id,
        vae=manifest["vae"],
        latents=manifest["latents"],
        transform_json=json.dumps(manifest["transform"], indent=2),
        num_samples=len(index.entries),
        num_buckets=len(buckets),
        bucket_rows="\n".join(f"| {h} x {w} | {count} |" for (h, w), count in sorted(buckets.items())),
        command=last_run.get("command"),
    )


@dataclass(frozen=True)
class PushCacheSettings:
    """How :func:`push_cache` uploads a cache: the flags of ``litevae push-cache`` (each field's help says what it
    does; ``commit_message`` is for ``upload_folder`` only, ``license`` is that of the images, which carries over to
    their latents)."""

    private: bool = setting(False, "create the repo private", action="store_true")
    token: str | None = setting(None, "Hugging Face token (default: the one stored by `hf auth login`)")
    license: str | None = setting(None, "Hub license id for the card (that of the images)")
    commit_message: str | None = setting(None, f'commit message of the upload (default: "{DEFAULT_COMMIT_MESSAGE}")')
    large: bool | None = setting(
        None, "upload with upload_large_folder (resumable, many commits); default: for caches over 10 GiB"
    )
    dry_run: bool = setting(
        False,
        "only write the dataset card (README.md) into the cache",
        flags=("--dry_run", "--dry-run"),
        action="store_true",
    )


def push_cache(
    cache_dir: str | os.PathLike, repo_id: str, settings: PushCacheSettings | None = None, **overrides
) -> str:
    """Upload the cache in ``cache_dir`` to the Hub dataset repo ``repo_id``, with its dataset card.

    Args:
        cache_dir: a finished cache (``litevae cache-latents``' ``--output_dir``).
        repo_id: ``owner/name`` of the dataset repo (created if missing).
        settings (`PushCacheSettings`, *optional*): how to upload; ``overrides`` change its fields by name
            (``push_cache(cache, repo_id, dry_run=True)``). ``large=None`` (default): ``upload_large_folder`` for
            caches over :data:`LARGE_CACHE_BYTES`.

    Returns:
        The repo URL, or for a dry run the card's path.

    Raises:
        CacheInputError: not a finished cache, a bad repo id, no token, or a caching run writing to it now.
    """
    from huggingface_hub import HfApi, get_token

    from ..hub_ids import is_owner_repo_id

    settings = replace(settings or PushCacheSettings(), **overrides)
    root = Path(cache_dir).expanduser()
    if not is_owner_repo_id(repo_id):
        raise CacheInputError(f"--repo_id must look like 'owner/name', got {repo_id!r}.")
    _read_cache(root)
    if not settings.dry_run:
        token = settings.token or get_token()
        if not token:
            raise CacheInputError("no Hugging Face token: run `hf auth login` or pass --token.")
    with CacheLock(root):  # no caching run may change the cache while it is read and uploaded
        card_path = root / "README.md"
        cache_card(root, repo_id, settings.license).save(str(card_path))
        if settings.dry_run:
            return str(card_path)
        large = settings.large
        if large is None:
            large = sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) > LARGE_CACHE_BYTES
        api = HfApi(token=token)
        api.create_repo(repo_id=repo_id, repo_type="dataset", private=settings.private, exist_ok=True)
        # huggingface_hub 2 dropped upload_large_folder: its upload_folder itself uploads in resumable chunks.
        if large and hasattr(api, "upload_large_folder"):
            api.upload_large_folder(
                repo_id=repo_id, folder_path=str(root), repo_type="dataset", ignore_patterns=UPLOAD_IGNORE
            )
        else:
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(root),
                repo_type="dataset",
                commit_message=settings.commit_message or DEFAULT_COMMIT_MESSAGE,
                ignore_patterns=UPLOAD_IGNORE,
            )
    return f"https://huggingface.co/datasets/{repo_id}"


def open_cache(cache_dir_or_repo_id: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """The local folder of a cache: ``cache_dir_or_repo_id`` itself when it is a folder, else the snapshot of that
    Hub dataset repo at ``revision`` (``snapshot_download``, cached by huggingface_hub)."""
    from ..hub_ids import is_hub_repo_id

    if not is_hub_repo_id(cache_dir_or_repo_id):
        return Path(cache_dir_or_repo_id).expanduser()
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(str(cache_dir_or_repo_id), repo_type="dataset", revision=revision, token=token)
    except Exception as error:  # not found, offline, gated: one line naming the repo
        raise CacheInputError(
            f"could not download the latent cache {str(cache_dir_or_repo_id)!r}"
            f"{f' at revision {revision!r}' if revision else ''}: {type(error).__name__}: {error}".splitlines()[0]
        ) from error
    return Path(folder)


def check_cache_vae(manifest: dict, vae, where: str) -> None:
    """Refuse a cache whose latents another VAE made: ``vae`` is a loaded VAE or a name for
    :func:`~diffusers_litevae.vae_io.load_vae`. Compared: class, config and weights hashes, latent-space factors."""
    from ..vae_io import load_vae, vae_identity

    name = str(vae) if isinstance(vae, (str, os.PathLike)) else None
    identity = vae_identity(load_vae(name) if name is not None else vae, name)
    cached = manifest.get("vae", {})
    differences = [key for key in _VAE_KEYS if cached.get(key) != identity.get(key)]
    if differences:
        raise CacheInputError(
            f"the latent cache {where} was made by another VAE ({cached.get('class')} from "
            f"{cached.get('name_or_path')!r}, not {identity['class']} from {identity['name_or_path']!r}; "
            f"differs in {', '.join(differences)}): its latents do not decode with this VAE."
        )
