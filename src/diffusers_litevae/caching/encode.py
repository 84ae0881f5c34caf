"""The caching job: encode an image folder or dataset into a latent cache, incrementally and resumably.

:func:`cache_latents` refuses an existing cache built with other settings before any work, plans against the index
what to encode (new or changed images), keep (unchanged ones, caption edits applied) and drop (removed ones), decodes
in DataLoader workers batched by bucket, encodes (bf16 autocast on GPU, fp32 on CPU), writes shards from a background
thread, and finally merges every process's shards into the index. Under ``accelerate launch`` each process encodes an
interleaved part of the work list.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..file_io import check_output_dir, write_bytes_atomic, write_json_atomic
from ..image_io import is_saved_dataset
from ..runtime import compile_for_inference, is_cuda, pad_batch, resolve_compile, resolve_dtype
from ..settings import check_choices, setting
from ..vae_io import load_vae, posterior_moments, vae_identity
from .decode import DecodeStream, worker_init
from .index import (
    ERRORS_NAME,
    INDEX_NAME,
    LAST_RUN_NAME,
    MANIFEST_NAME,
    CacheIndex,
    CacheInputError,
    IncompatibleCacheError,
    compare_manifests,
    load_manifest,
)
from .planning import build_manifest, choose_compile, plan_work, read_jsonl
from .preprocess import TransformConfig, pixels_to_model_input
from .sources import HubDatasetSource, ImageFolderSource
from .writer import BackgroundWriter, CacheBusyError, CacheLock, ShardWriter, list_shard_files, remove_temp_files

__all__ = ["CacheReport", "CacheSettings", "cache_latents", "STORAGE_DTYPES"]

logger = logging.getLogger(__name__)

STORAGE_DTYPES = ("bf16", "fp16", "fp32")  # the names a manifest records
_MIXED_PRECISIONS = ("bf16", "fp16", "no")


@dataclass
class CacheReport:
    """What a caching run did.

    Attributes:
        output_dir: the cache folder.
        num_samples: samples in the cache after the run.
        num_encoded: samples encoded by this run (all processes).
        num_unchanged: samples kept from earlier runs.
        num_removed: index entries dropped because their image is gone (or changed and failed to decode).
        num_failed: images that could not be read or decoded (listed in ``errors.jsonl``), this run or earlier.
        num_skipped_files: files skipped while listing (not images), also in ``errors.jsonl``.
        num_metadata_updates: unchanged images whose caption or file stat changed (index updated, no encode).
        encoded_ids: ids this process encoded.
        wall_s: seconds for the whole run; images_per_s: encoded images per second of the encode phase.
        steady_images_per_s: the same without the compiled encoder's warm-up (compile and CUDA-graph capture,
            ``timings["warmup"]``); equal to ``images_per_s`` when nothing was compiled.
        compiled: whether the encoder ran compiled.
        timings: where this process's encode phase went (seconds): ``loader_wait`` (waiting for decoded batches),
            ``decode_worker`` (summed worker time), ``transfer`` (host to device), ``encode``, ``warmup`` (first
            call of each batch shape when compiled: compiling and capturing, not in ``encode``), ``writer_busy``
            (background thread), ``writer_wait`` (encoder blocked on the writer), ``encode_phase`` (wall), ``cpu``
            (CPU seconds of this process and its loader workers during the encode phase).
    """

    output_dir: str
    num_samples: int = 0
    num_encoded: int = 0
    num_unchanged: int = 0
    num_removed: int = 0
    num_failed: int = 0
    num_skipped_files: int = 0
    num_metadata_updates: int = 0
    encoded_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    images_per_s: float = 0.0
    steady_images_per_s: float = 0.0
    compiled: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "encoded_ids"}


# ------------------------------------------------------------------------------------------ settings

INPUT_GROUP = "input (one of --train_data_dir / --dataset_name)"  # where `litevae cache-latents --help` lists them


@dataclass(frozen=True)
class CacheSettings:
    """How :func:`cache_latents` reads its source, encodes it and writes the cache: the settings of
    ``litevae cache-latents`` (each field's help says what it does), and a few of the Python API only.

    The dataset fields apply to a source given as a dataset (:meth:`dataset_source`), ``caption_extension`` to an
    image folder, the VAE fields to a VAE given by name. A compiled encoder runs one static-shape graph per bucket
    (every batch padded to ``batch_size``), with CUDA graphs on CUDA.

    Python API only: ``transform``, the resize/crop settings (:class:`TransformConfig`); ``progress``, the tqdm bar
    of the main process; ``command``, the command line recorded in ``last_run.json`` (and the dataset card).
    """

    dataset_config_name: str | None = setting(None, "dataset configuration name", group=INPUT_GROUP)
    split: str = setting("train", "dataset split", group=INPUT_GROUP)
    image_column: str | None = setting(
        None, "dataset image column (default: the first Image feature)", group=INPUT_GROUP
    )
    caption_column: str | None = setting(
        None, "dataset caption column (default: the first of text/caption/captions/prompt/sentence)", group=INPUT_GROUP
    )
    caption_extension: str | None = setting(".txt", "sidecar caption extension for folders", group=INPUT_GROUP)
    dataset_cache_dir: str | None = setting(None, "cache_dir for datasets.load_dataset", group=INPUT_GROUP)
    max_images: int | None = setting(
        None,
        "cache only the first N images (sorted by sample id); entries beyond them are removed from the cache",
        group=INPUT_GROUP,
    )
    vae_subfolder: str | None = setting(None, "subfolder of the VAE, e.g. 'vae' in a pipeline repo", group="VAE")
    vae_class: str | None = setting(None, "VAE class name (default: the config's _class_name)", group="VAE")
    revision: str | None = setting(None, "Hub revision of the VAE", group="VAE")
    variant: str | None = setting(None, "weights variant of the VAE, e.g. fp16", group="VAE")
    dtype: str = setting("bf16", "storage dtype of mean/std", choices=STORAGE_DTYPES, group="output")
    samples_per_shard: int = setting(512, "samples per safetensors shard", group="output")
    transform: TransformConfig = field(default_factory=TransformConfig)
    batch_size: int = setting(16, "images per encoder call", group="speed")
    num_workers: int = setting(
        4,
        "DataLoader worker processes decoding and resizing (0: in the main process); "
        "default: 4, or fewer on a machine with fewer CPU cores",
        group="speed",
    )
    mixed_precision: str = setting(
        "bf16",
        "autocast dtype on CUDA (CPU runs fp32 unless --cpu_mixed_precision)",
        choices=_MIXED_PRECISIONS,
        group="speed",
    )
    cpu_mixed_precision: bool = setting(
        False,
        "bf16 autocast on CPU too (several times faster on CPUs with AVX-512 BF16/AMX, bf16 precision)",
        action="store_true",
        group="speed",
    )
    channels_last: bool = setting(
        False, "channels-last memory format for the encoder", action="store_true", group="speed"
    )
    compile: bool | None = setting(
        None,
        "torch.compile the encoder (static shapes, CUDA graphs); default: on CUDA only when there are enough "
        "images per bucket shape to pay back the compile (about 50,000; the log says which and why), off on CPU",
        group="speed",
    )
    device: str | torch.device | None = setting(
        None, "device (default: accelerate's device for this process)", group="speed"
    )
    retry_failed: bool = setting(False, "retry images that failed in earlier runs", action="store_true")
    progress: bool = True
    command: str | None = None

    def __post_init__(self):
        check_choices(self, CacheInputError)
        if self.batch_size < 1:
            raise CacheInputError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.num_workers < 0:
            raise CacheInputError(f"num_workers must be >= 0 (0: decode in this process), got {self.num_workers}.")
        if self.max_images is not None and self.max_images < 1:
            raise CacheInputError(f"max_images must be >= 1, got {self.max_images}.")

    def replace(self, **changes) -> CacheSettings:
        """A copy with ``changes``: fields of these settings, or of :class:`TransformConfig` for its ``transform``
        (``settings.replace(resolution=512, bucketing=False, dtype="fp32")``)."""
        if changes.get("transform", self.transform) is None:  # as if not given
            del changes["transform"]
        transform_names = changes.keys() & TransformConfig.__dataclass_fields__.keys()
        if transform_names:
            if "transform" in changes:
                raise TypeError(
                    f"pass either transform= or transform fields, not both (got {sorted(transform_names)})."
                )
            changes["transform"] = replace(self.transform, **{name: changes.pop(name) for name in transform_names})
        return replace(self, **changes)

    def dataset_source(self, dataset) -> HubDatasetSource:
        """``dataset`` (a Hub id, ``save_to_disk`` folder or ``datasets.Dataset``) read with these settings."""
        return HubDatasetSource(
            dataset,
            config_name=self.dataset_config_name,
            split=self.split,
            image_column=self.image_column,
            caption_column=self.caption_column,
            cache_dir=self.dataset_cache_dir,
        )


# ----------------------------------------------------------------------------------------------- job


class _SingleProcess:
    """The one-process stand-in for accelerate's ``PartialState`` (leaves accelerate's global state untouched)."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    def __init__(self):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wait_for_everyone(self) -> None:
        pass


def _process_state(device):
    """accelerate's ``PartialState`` when started by ``accelerate launch``/torchrun (both export ``WORLD_SIZE``),
    else one plain process, which needs no process group."""
    from accelerate import PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Without CUDA, processes started by `accelerate launch --multi_gpu` / torchrun form a gloo (CPU) group.
        cpu = (device is not None and torch.device(device).type == "cpu") or not torch.cuda.is_available()
        return PartialState(cpu=cpu)
    return _SingleProcess()


@contextlib.contextmanager
def _run_lock(root: Path, state):
    """Hold the cache folder's :class:`~diffusers_litevae.caching.writer.CacheLock` for one run: the main process
    takes it, and every process of the run raises :class:`~diffusers_litevae.caching.writer.CacheBusyError` when
    another run holds it."""
    lock, message = CacheLock(root), None
    if state.is_main_process:
        try:
            lock.acquire()
        except CacheBusyError as error:
            message = str(error)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([message], from_process=0)[0]
    if message is not None:
        raise CacheBusyError(message)
    try:
        yield
    finally:
        lock.release()  # a no-op where it was not taken


def cache_latents(
    source, vae, output_dir: str | os.PathLike, settings: CacheSettings | None = None, **overrides
) -> CacheReport:
    """Encode an image folder or dataset into a latent cache (incremental, resumable, multi-process aware).

    Args:
        source: an image folder path, a Hub dataset id / ``save_to_disk`` folder / ``datasets.Dataset``, or an
            :class:`~diffusers_litevae.caching.sources.ImageFolderSource` / ``HubDatasetSource``.
        vae: a loaded diffusers VAE (``AutoencoderLite``, ``AutoencoderKL``, ``AutoencoderTiny``, ...; the job encodes
            with a copy of it, so the caller's model is not moved, cast or compiled) or a folder / Hub id for
            :func:`~diffusers_litevae.vae_io.load_vae`.
        output_dir: the cache folder (created; an existing cache is updated if its settings match, else refused).
        settings (`CacheSettings`, *optional*): how to read, encode and write (default: ``CacheSettings()``).
        overrides: changes to ``settings`` by field name, also of its ``transform``
            (``cache_latents(folder, vae, out, resolution=512, bucketing=False, dtype="fp32")``; see
            :meth:`CacheSettings.replace`).

    Returns:
        :class:`CacheReport`.
    """
    started = time.perf_counter()
    settings = (settings or CacheSettings()).replace(**overrides)
    state = _process_state(settings.device)
    device = torch.device(settings.device) if settings.device is not None else state.device
    # The folders first: a mistake in either is reported before the VAE loads and before anything is created.
    root = check_output_dir(output_dir, "cache-latents", CacheInputError).resolve()
    source = _open_source(source, settings, root)
    run = _Run(state=state, device=device, root=root, source=source, settings=settings, started=started)
    vae, vae_info = _load_encoder(vae, device, settings)
    manifest, existing = _check_manifest(run, vae, vae_info)
    state.wait_for_everyone()  # every process has read the manifest before the main one may write it
    with _run_lock(root, state):  # one run writes a cache at a time; its processes write together
        plan = _plan(run, manifest, existing)
        # Whether the encoder runs compiled (compile=None: where it pays; the reason is logged). Full-size images
        # ("full" crops, no buckets) are each their own input shape.
        num_shapes = len(settings.transform.buckets()) or max(len(plan.todo), 1)
        compile_chosen, reason = choose_compile(settings.compile, is_cuda(device), len(plan.todo), num_shapes)
        if state.is_main_process:
            logger.info(reason)
        resolved = settings.replace(
            compile=resolve_compile(compile_chosen, device), progress=settings.progress and state.is_main_process
        )
        run = replace(run, settings=resolved)
        my_todo = plan.todo[state.process_index :: state.num_processes]
        timings, encoded_ids = _encode_items(run, my_todo, vae, vae_info, plan.generation)
        state.wait_for_everyone()
        report = CacheReport(output_dir=str(root), encoded_ids=encoded_ids, timings=timings)
        if state.is_main_process:
            _merge(run, plan, report, vae_info["name_or_path"])
        state.wait_for_everyone()
        return report


# ------------------------------------------------------------------------------------ the steps of a run


@dataclass(frozen=True)
class _Run:
    """What every step of one :func:`cache_latents` run shares."""

    state: object  # accelerate's PartialState or _SingleProcess
    device: torch.device
    root: Path
    source: object  # ImageFolderSource or HubDatasetSource
    settings: CacheSettings
    started: float  # time.perf_counter() at the call, for the report's wall_s


@dataclass
class _Plan:
    """What the cache holds and what this run will change (see :func:`_plan`)."""

    items: list
    skipped: list[dict]
    index: CacheIndex
    todo: list
    kept_failures: list[dict]
    num_removed: int
    num_updates: int
    generation: int
    known_before: set


def _open_source(source, settings: CacheSettings, root: Path):
    """The source to cache, refusing an image folder without images before the VAE loads."""
    if isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir() and not is_saved_dataset(source):
        source = ImageFolderSource(source, caption_extension=settings.caption_extension, exclude=(root,))
    elif not isinstance(source, (ImageFolderSource, HubDatasetSource)):
        source = settings.dataset_source(source)
    if isinstance(source, ImageFolderSource):
        source.check_not_empty()
    return source


def _load_encoder(vae, device, settings: CacheSettings):
    """``(vae, vae_info)``: the VAE to encode with (fp32 weights on ``device``, eval) and its identity."""
    vae_name = str(vae) if isinstance(vae, (str, os.PathLike)) else None
    if vae_name is None:
        # The caller's model (e.g. a pipeline's pipe.vae) is left as it was: moving, upcasting, channels-last and
        # compiling happen on a copy.
        vae = copy.deepcopy(vae)
    else:
        vae = load_vae(
            vae_name,
            subfolder=settings.vae_subfolder,
            vae_class=settings.vae_class,
            revision=settings.revision,
            variant=settings.variant,
        )
    vae_info = vae_identity(vae, vae_name, settings.vae_subfolder, settings.revision)
    vae = vae.to(device).eval().requires_grad_(False)
    if any(parameter.dtype != torch.float32 for parameter in vae.parameters()):
        vae = vae.float()  # fp32 weights: CPU encodes in fp32, CUDA autocasts to bf16/fp16
    return vae, vae_info


def _check_manifest(run: _Run, vae, vae_info: dict) -> tuple[dict, dict | None]:
    """``(manifest, existing)``: this run's manifest and the cache's, refusing a cache built with other settings."""
    root = run.root
    with torch.inference_mode():  # the latent geometry, measured on one 64x64 image
        mean, std = posterior_moments(vae, torch.zeros(1, 3, 64, 64, device=run.device))
    factor = 64 // mean.shape[-1]
    run.settings.transform.check_downsample_factor(factor)
    manifest = build_manifest(
        vae_info, run.settings.transform, run.settings.dtype, mean.shape[1], factor, std is not None, run.source
    )
    existing = load_manifest(root)
    if existing is None and (list_shard_files(root) or (root / INDEX_NAME).exists()):
        raise IncompatibleCacheError(
            f"{root} holds latent shards but no manifest.json, so their settings are unknown: use another "
            "--output_dir (or delete the folder to rebuild it)."
        )
    if existing is not None:
        differences = compare_manifests(existing, manifest)
        if differences:
            raise IncompatibleCacheError(
                f"the cache in {root} was built with other settings; mixing them would corrupt it:\n  - "
                + "\n  - ".join(differences)
                + "\nUse another --output_dir for these settings (or delete the old cache to rebuild it)."
            )
        if existing.get("source_info") != manifest["source_info"] and run.state.is_main_process:
            logger.warning(
                "the cache was built from %s; it now mirrors %s (samples missing from it will be dropped).",
                existing.get("source_info"),
                manifest["source_info"],
            )
    return manifest, existing


def _plan(run: _Run, manifest: dict, existing: dict | None) -> _Plan:
    """Under the run's lock: (main process) create the folder, clear what a killed run left half-written and record
    the manifest of a new cache; then list the source, load the index (and earlier failures) and decide what to
    encode, keep and drop."""
    state, root = run.state, run.root
    if state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        remove_temp_files(root)
        for stale in root.glob("errors.r*.partial.jsonl"):
            stale.unlink()
        if existing is None:
            write_json_atomic(root / MANIFEST_NAME, manifest)
    items, skipped = run.source.scan()
    if run.settings.max_images is not None:
        items = items[: run.settings.max_images]
    index = CacheIndex.load(root)
    previous_failures = {
        row["sample_id"]: row for row in read_jsonl(root / ERRORS_NAME) if row.get("stage") == "decode"
    }
    todo, kept_failures, num_removed, num_updates = plan_work(
        items, index, previous_failures, run.source, run.settings.retry_failed
    )
    generation = index.next_generation()
    known_before = set(index.known_shards)
    state.wait_for_everyone()  # nobody writes a shard before every process has read the cache state
    if state.is_main_process:
        logger.info(
            "%s: %d images, %d to encode (%d processes), %d unchanged, %d removed, %d known failures",
            run.source.describe(),
            len(items),
            len(todo),
            state.num_processes,
            len(items) - len(todo) - len(kept_failures),
            num_removed,
            len(kept_failures),
        )
    return _Plan(items, skipped, index, todo, kept_failures, num_removed, num_updates, generation, known_before)


def _merge(run: _Run, plan: _Plan, report: CacheReport, vae_name: str) -> None:
    """Main process, after every process encoded: fold this run's shards into the index, drop entries of removed
    images and dead shards, write ``errors.jsonl`` (removing the partial ones), fill ``report`` and write
    ``last_run.json``."""
    root, index = run.root, plan.index
    index.recover_orphans()  # this run's shards, from every process
    source_ids = {item.sample_id for item in plan.items}
    index.entries = {sample_id: entry for sample_id, entry in index.entries.items() if sample_id in source_ids}
    index.write()
    index.delete_dead_shards()
    # errors.jsonl: the skipped files, then every failure by sample id (this run's from each process's partial file).
    partials = sorted(root.glob("errors.r*.partial.jsonl"))
    new_failures = [row for partial in partials for row in read_jsonl(partial)]
    failures = sorted(plan.kept_failures + new_failures, key=lambda row: row["sample_id"])
    rows = plan.skipped + failures
    write_bytes_atomic(root / ERRORS_NAME, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())
    for partial in partials:
        partial.unlink()
    new_shards = index.known_shards - plan.known_before
    report.num_samples = len(index.entries)
    report.num_encoded = sum(1 for entry in index.entries.values() if entry["shard"] in new_shards)
    report.num_unchanged = report.num_samples - report.num_encoded
    report.num_removed = plan.num_removed
    report.num_failed = len(failures)
    report.num_skipped_files = len(plan.skipped)
    report.num_metadata_updates = plan.num_updates
    report.wall_s = time.perf_counter() - run.started
    phase = report.timings.get("encode_phase", 0.0)
    report.images_per_s = report.num_encoded / phase if phase > 0 else 0.0
    steady = phase - report.timings.get("warmup", 0.0)
    report.steady_images_per_s = report.num_encoded / steady if steady > 0 else 0.0
    report.compiled = run.settings.compile
    write_json_atomic(
        root / LAST_RUN_NAME,
        {
            **report.to_dict(),
            "processes": run.state.num_processes,
            "device": str(run.device),
            "vae_name_or_path": vae_name,
            "command": run.settings.command,
        },
    )
    if failures or plan.skipped:
        logger.warning(
            "%d images failed and %d files were skipped: see %s",
            len(failures),
            len(plan.skipped),
            root / ERRORS_NAME,
        )


# ----------------------------------------------------------------------------------------------- encode

_TIMINGS = ("loader_wait", "decode_worker", "transfer", "encode", "warmup", "writer_busy", "writer_wait")


class _EncodeTimer:
    """Where the encode phase goes, in the report's ``timings`` keys; the phase starts when the timer is made.

    On CUDA the copy and the encoder run asynchronously, so host clocks would time the launches, not the work: each
    batch records CUDA events, read once after the phase. A compiled encoder's first call of a batch shape (compile,
    CUDA-graph capture) is synchronized and timed on the host as ``warmup``, so ``encode`` stays the steady figure.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.timings = dict.fromkeys((*_TIMINGS, "encode_phase", "cpu"), 0.0)
        self._events: list[list] = []  # per batch: (before copy, after copy, after encode) CUDA events
        self._marks: list | None = None
        self._encode_start = 0.0
        self._phase_start, self._cpu_start = time.perf_counter(), os.times()

    def batches(self, loader):
        """The loader's batches, timing the wait for each and adding up the workers' decode time."""
        iterator = iter(loader)
        while True:
            wait_start = time.perf_counter()
            batch = next(iterator, None)
            self.timings["loader_wait"] += time.perf_counter() - wait_start
            if batch is None:
                return
            self.timings["decode_worker"] += batch["decode_s"]
            yield batch

    @contextlib.contextmanager
    def transfer(self):
        """Around the host-to-device copy; the encode is timed from its end."""
        step_start = time.perf_counter()
        if self.cuda:
            self._marks = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            self._marks[0].record()
        yield
        if self.cuda:
            self._marks[1].record()
        else:
            self.timings["transfer"] += time.perf_counter() - step_start
        self._encode_start = time.perf_counter()

    def encoded(self, warmup: bool):
        """After the batch's latents were queued for the host; returns the CUDA event the writer waits for (or
        ``None`` on CPU). ``warmup``: the compiled encoder's first call of this shape."""
        if not self.cuda:
            self.timings["warmup" if warmup else "encode"] += time.perf_counter() - self._encode_start
            return None
        marks = self._marks
        marks[2].record()
        self._events.append(marks)
        if warmup:  # compiling and capturing: timed on the host, kept out of the encode figure
            torch.cuda.synchronize(self.device)
            self.timings["warmup"] += time.perf_counter() - self._encode_start
            self._events.pop()
        return marks[2]

    def finish(self, writer: BackgroundWriter) -> dict[str, float]:
        """Close the phase (after the loader's workers were joined and the writer closed); returns the timings."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            for start, copied, done in self._events:
                self.timings["transfer"] += start.elapsed_time(copied) / 1000
                self.timings["encode"] += copied.elapsed_time(done) / 1000
        self.timings["encode_phase"] = time.perf_counter() - self._phase_start
        # User and system time of this process and of its children: the loader's workers, joined by now.
        self.timings["cpu"] = sum(end - start for end, start in zip(os.times()[:4], self._cpu_start[:4]))
        self.timings["writer_busy"] = writer.busy_s
        self.timings["writer_wait"] = writer.submit_wait_s
        return self.timings


def _autocast_dtype(device: torch.device, settings: CacheSettings) -> torch.dtype | None:
    """The encoder's autocast dtype, ``None`` for full precision."""
    if device.type == "cuda":
        return None if settings.mixed_precision == "no" else resolve_dtype(settings.mixed_precision)
    # CPU autocast supports bf16 only
    return torch.bfloat16 if settings.cpu_mixed_precision and settings.mixed_precision != "no" else None


def _encode_batch(
    vae, pixels, run: _Run, timer: _EncodeTimer, autocast_dtype: torch.dtype | None, storage_dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """One batch of ``uint8`` pixels to ``(tensors, input_shape)``: what the batch adds to its shard (``mean``,
    ``std`` unless the VAE is deterministic, with ``flip`` also ``mean_flipped``/``std_flipped``) in
    ``storage_dtype``, on CUDA copied to the host without waiting; ``input_shape``: the encoder's input, padding
    included. ``autocast_dtype``: see :func:`_autocast_dtype`."""
    settings, device = run.settings, run.device
    with timer.transfer():
        pixels = pixels.to(device, non_blocking=True)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        images = pixels_to_model_input(pixels)
        if settings.transform.flip:
            images = torch.cat([images, images.flip(-1)])
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        real = images.shape[0]
        if settings.compile:
            # Static shapes: a partial batch runs padded, on the full batch's graph.
            images = pad_batch(images, settings.batch_size * (2 if settings.transform.flip else 1))
            if device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
        moments = dict(zip(("mean", "std"), posterior_moments(vae, images)))
    tensors = {}
    for name, tensor in moments.items():
        if tensor is None:
            continue
        # A copy (CUDA-graph outputs are overwritten by the next call) without the padding.
        tensor = tensor[:real].to(storage_dtype, copy=True).to("cpu", non_blocking=True)
        if settings.transform.flip:  # the flipped copies follow the originals
            tensors[name], tensors[f"{name}_flipped"] = tensor.chunk(2)
        else:
            tensors[name] = tensor
    return tensors, tuple(images.shape)


def _encode_items(run: _Run, items, vae, vae_info: dict, generation: int):
    """Encode ``items`` into shards of ``generation`` and this process; returns ``(timings, encoded_ids)``."""
    from tqdm.auto import tqdm

    settings, device, rank, world = run.settings, run.device, run.state.process_index, run.state.num_processes
    encoded_ids: list[str] = []
    if not items:
        return _EncodeTimer(device).timings, encoded_ids
    if settings.channels_last:
        vae = vae.to(memory_format=torch.channels_last)
    if settings.compile:
        compile_for_inference(vae.encoder, device)
    autocast_dtype, storage_dtype = _autocast_dtype(device, settings), resolve_dtype(settings.dtype)
    warm_shapes: set[tuple[int, ...]] = set()  # batch shapes the compiled encoder has already run
    loader = DataLoader(  # DecodeStream yields whole batches
        DecodeStream(run.source, items, settings.transform, settings.batch_size),
        batch_size=None,
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init if settings.num_workers > 0 else None,
        prefetch_factor=4 if settings.num_workers > 0 else None,
    )
    metadata = {
        "vae_class": vae_info["class"],
        "vae_weights_hash": vae_info["weights_hash"],
        "dtype": settings.dtype,
        "generation": str(generation),
        "rank": str(rank),
    }
    # Whole-image ("full") caches give nearly every image its own size, so per-size buckets rarely fill: write the
    # fullest early to keep memory and the work a kill can lose small.
    max_buffered = 64 if settings.transform.crop == "full" else None
    writer = BackgroundWriter(
        ShardWriter(run.root, generation, rank, settings.samples_per_shard, max_buffered, metadata=metadata)
    )
    errors_path = run.root / f"errors.r{rank:03d}.partial.jsonl"
    where = f"{device.type}, process {rank + 1}/{world}" if world > 1 else device.type
    bar = tqdm(
        total=len(items),
        desc=f"caching latents ({where})",
        unit="img",
        disable=not settings.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    timer = _EncodeTimer(device)
    try:
        for batch in timer.batches(loader):
            if batch["failed"]:
                with open(errors_path, "a", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in batch["failed"])
                bar.update(len(batch["failed"]))
            if batch["pixels"] is None:
                continue
            tensors, shape = _encode_batch(vae, batch["pixels"], run, timer, autocast_dtype, storage_dtype)
            first_call = settings.compile and shape not in warm_shapes
            ready = timer.encoded(warmup=first_call)
            if first_call:
                warm_shapes.add(shape)
            writer.submit(tuple(batch["bucket"]), batch["entries"], tensors, ready)
            encoded_ids.extend(entry["id"] for entry in batch["entries"])
            bar.update(len(batch["entries"]))
        writer.close()
    except BaseException:
        # Keep what is already encoded (an interrupt or an error elsewhere): completed shards are picked up next run.
        with contextlib.suppress(BaseException):
            writer.close()
        raise
    finally:
        bar.close()
    return timer.finish(writer), encoded_ids
