"""The caching job's bookkeeping: what to encode (against the index and earlier failures) and the manifest."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .index import CacheIndex
from .preprocess import TransformConfig
from .sources import SourceItem, content_hash
from .writer import CACHE_FORMAT, FORMAT_VERSION

__all__ = [
    "COMPILE_PAYS_FROM_IMAGES_PER_SHAPE",
    "build_manifest",
    "choose_compile",
    "plan_work",
    "read_jsonl",
]

# Compiling a LiteVAE encoder took 37-43 s per input shape on an H200 and saved 0.3 ms (S) to 0.7 ms (B) per image at
# 512 px against eager bf16 with the fused GroupNorm + SiLU (benchmarks/results/gpu_profile_h200.md): it pays back
# from roughly 50,000 images per bucket shape (B; about 130,000 for S). Every bucket shape compiles its own graph.
COMPILE_PAYS_FROM_IMAGES_PER_SHAPE = 50_000

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (none if it is missing); a corrupt line is logged, except a last line cut by a kill."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # The last line may be cut by a kill mid-write (expected, harmless); anything else is reported.
            if number != len(lines):
                logger.warning("%s line %d is not valid JSON and was ignored: %r", path, number, line[:120])
    return rows


def choose_compile(flag: bool | None, cuda: bool, num_images: int, num_shapes: int) -> tuple[bool, str]:
    """Whether the caching job compiles its encoder, and why (one line for the log).

    An explicit ``flag`` (``--compile`` / ``--no-compile``) decides. With ``None``, compile only on ``cuda`` (elsewhere
    compiled encoders measured slower than eager), and only when the ``num_images`` to encode come to at least
    :data:`COMPILE_PAYS_FROM_IMAGES_PER_SHAPE` per input shape (``num_shapes``: the transform's buckets, or one per
    image for full-size images): below that the compile warm-up costs more than it saves.
    """
    if flag is not None:
        return bool(flag), f"compile {'on' if flag else 'off'} (--{'' if flag else 'no-'}compile)"
    if not cuda:
        return False, "compile off: not on CUDA"
    per_shape = num_images / max(num_shapes, 1)
    enabled = per_shape >= COMPILE_PAYS_FROM_IMAGES_PER_SHAPE
    return enabled, (
        f"compile {'on' if enabled else 'off'}: {num_images} images over up to {num_shapes} input shapes (about "
        f"{per_shape:.0f} per shape); compiling pays from about {COMPILE_PAYS_FROM_IMAGES_PER_SHAPE} images per shape "
        "(--compile / --no-compile decide instead)"
    )


def plan_work(items, index: CacheIndex, previous_failures: dict[str, dict], source, retry_failed: bool):
    """Decide per item: keep (maybe with metadata updates), encode, or skip as a known failure.

    Mutates ``index.entries``: drops removed samples and the stale entries of changed ones, applies caption and
    stat updates. Returns ``(todo, kept_failures, num_removed, num_updates)``.
    """
    source_ids = {item.sample_id for item in items}
    removed = [sample_id for sample_id in index.entries if sample_id not in source_ids]
    for sample_id in removed:
        del index.entries[sample_id]
    existing_shards = {relpath for relpath in index.live_shards() if (index.root / relpath).exists()}

    todo: list[SourceItem] = []
    needs_hash: list[tuple[SourceItem, dict]] = []
    kept_failures: list[dict] = []
    updates = 0
    for item in items:
        entry = index.entries.get(item.sample_id)
        if entry is not None and entry["shard"] not in existing_shards:
            del index.entries[item.sample_id]  # its shard was deleted by hand: encode again
            entry = None
        if entry is None:
            failure = previous_failures.get(item.sample_id)
            if failure is not None and failure.get("fingerprint") == item.fingerprint and not retry_failed:
                kept_failures.append(failure)
            else:
                todo.append(item)
            continue
        if entry.get("fingerprint") == item.fingerprint or (
            item.content_hash is not None and entry.get("content_hash") == item.content_hash
        ):
            if entry.get("caption") != item.caption:
                entry["caption"] = item.caption
                updates += 1
        else:
            needs_hash.append((item, entry))

    # A changed stat (touched, copied, restored from backup) re-encodes only if the bytes differ (read on 8 threads).
    def read_hash(item: SourceItem) -> str | None:
        try:
            return content_hash(source.read_bytes(item.locator))
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        hashes = list(pool.map(read_hash, [item for item, _ in needs_hash]))
    for (item, entry), digest in zip(needs_hash, hashes):
        if digest is not None and digest == entry.get("content_hash"):
            entry["fingerprint"] = item.fingerprint
            entry["caption"] = item.caption
            updates += 1
        else:
            del index.entries[item.sample_id]
            todo.append(item)
    return todo, kept_failures, len(removed), updates


def build_manifest(
    vae_info: dict, transform: TransformConfig, dtype: str, channels: int, factor: int, has_std: bool, source
) -> dict:
    """The cache's ``manifest.json``: what was encoded, by which VAE, with which preprocessing, from which source."""
    stored = ["mean", "std"] if has_std else ["mean"]
    if transform.flip:
        stored += [f"{name}_flipped" for name in stored]
    return {
        "format": CACHE_FORMAT,
        "version": FORMAT_VERSION,
        "vae": vae_info,
        "latents": {
            "channels": channels,
            "downsample_factor": factor,
            "dtype": dtype,
            "tensors": stored,
            "std": "exp(0.5 * logvar), logvar clamped to [-30, 20] (diffusers DiagonalGaussianDistribution); "
            "absent for deterministic VAEs",
            "scaling": "unscaled: training latents are (latent - shift_factor) * scaling_factor",
        },
        "transform": transform.to_dict(),
        # A cache mirrors the source it is pointed at (a moved folder is fine): only the kind must stay the same.
        "source": {"kind": source.kind},
        "source_info": source.identity(),
    }
