"""A distillation campaign that continues across short runs, on a GPU or a CPU.

GPU time often comes in runs of a few minutes. A campaign folder holds everything a run needs to continue exactly
where the last one stopped, in files small enough to commit (safetensors and JSON, each at most 16 MB):

    CAMPAIGN/campaign.json          settings (fixed at creation), step, images seen, time per device, data
                                    position, loss curve, evaluations
    CAMPAIGN/student*.safetensors   the student encoder's weights (float32)
    CAMPAIGN/ema*.safetensors       their exponential moving average (what is exported and evaluated)
    CAMPAIGN/optimizer*.safetensors AdamW's moments (its scalar state is in campaign.json)
    CAMPAIGN/rng.safetensors        the torch CPU (and CUDA) generator states

The data position is the step: the sample stream is a fixed function of the seed and the stream position
(``StepIndexedBatchSampler``: a permutation per epoch, a crop seed per sample), so a resumed run draws the very
crops the uninterrupted run would have drawn. The learning rate is a function of the step too (linear warm-up,
then constant: a campaign extended run by run has no known end for a decaying schedule; the EMA weights play the
part of the decay).

One run: resume (or create) -> train for ``--minutes`` -> save -> export the EMA weights as a model folder ->
``litevae eval`` on Kodak-24 at 256 px crops, 512 px crops and whole images, beside the teacher -> record it.
Decoded training images are held in memory and cropped in DataLoader workers, so the step never waits on JPEG
decoding; the log reports the share of time the step waited for data.

Example (a GPU machine, then a CPU machine, continuing the same campaign)::

    python conversion/distill_campaign.py --campaign campaigns/litevae-s-taef2 --create --init_from litevae-s-taef2 \\
        --train_data_dir photos-train photos-hires --train_data_repeats 1 8 --minutes 5 \\
        --eval_dir kodak24 --output_dir run1
    python conversion/distill_campaign.py --campaign campaigns/litevae-s-taef2 --train_data_dir photos-train \\
        photos-hires --train_data_repeats 1 8 --minutes 3 --device cpu --output_dir run2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusers_litevae.file_io import follow_umask, save_pretrained
from diffusers_litevae.image_io import find_images, load_image
from diffusers_litevae.models.utils import normalize_sequences
from diffusers_litevae.training.data import (
    RandomCropDataset,
    ResolutionSchedule,
    StepIndexedBatchSampler,
    collate_batch,
    parse_scale_range,
)
from diffusers_litevae.training.distillation import distill_step, initial_encoder
from diffusers_litevae.training.losses import DistillationLoss, LossWeights
from diffusers_litevae.training.teachers import load_teacher
from diffusers_litevae.training.validation import plot_curve

logger = logging.getLogger("distill_campaign")

CAMPAIGN_FILE = "campaign.json"
MAX_FILE_BYTES = 16 * 1000 * 1000  # every committed file stays under 16 MB


@dataclass
class CampaignSettings:
    """What stays fixed for the whole campaign (recorded in ``campaign.json`` when it is created).

    Attributes:
        teacher: the frozen teacher (bundled name, folder or Hub id).
        student: LiteVAE encoder preset of a fresh student (``S``, ``B``, ...), unless ``init_from`` is given.
        init_from: a LiteVAE model whose encoder starts the campaign (e.g. the bundled ``litevae-s-taef2``).
        resolution_schedule: crop sizes, taken in turn one per step (``ResolutionSchedule`` syntax).
        crop_scales: crop scale range (``0.25,1``: from 4x-downscaled regions to native pixels).
        batch_size: images per step at the smallest size (larger sizes take fewer: equal pixels per step).
        learning_rate: AdamW learning rate after warm-up.
        warmup_steps: linear warm-up steps at the campaign's start.
        ema_decay: EMA decay of the exported weights.
        max_grad_norm: gradient clipping norm.
        latent_weight, std_weight, reconstruction_weight, wavelet_weight, gaussian_weight: the loss weights of
            ``DistillationLoss`` (latent MSE, posterior std, L1 through the frozen decoder, wavelet, Gaussian).
        seed: data seed (sample order and crops).
    """

    teacher: str = "taef2"
    student: str = "S"
    init_from: str | None = None
    resolution_schedule: str = "256/384/512"
    crop_scales: str = "0.25,1"
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    ema_decay: float = 0.999
    max_grad_norm: float = 1.0
    latent_weight: float = 1.0
    std_weight: float = 1.0
    reconstruction_weight: float = 1.0
    wavelet_weight: float = 0.1
    gaussian_weight: float = 0.1
    seed: int = 0

    def learning_rate_at(self, step: int) -> float:
        return self.learning_rate * min(1.0, (step + 1) / max(self.warmup_steps, 1))

    def loss_weights(self) -> LossWeights:
        return LossWeights.from_settings(self)


# ------------------------------------------------------------------------------------------------ training data


class DecodedImages:
    """Training photos decoded once and held in memory (a source for ``RandomCropDataset``): workers crop them
    without decoding a JPEG per sample. ``repeats`` lists a folder's photos that many times (a sampling weight).
    Files that cannot be read are listed in ``skipped`` and left out."""

    def __init__(self, folders: list[str], repeats: list[int]):
        self.images, self.names, self.skipped = [], [], []
        for folder, repeat in zip(folders, repeats):
            for path in find_images(folder):
                if path.name.startswith("bsds_val_"):  # the photo set's held-out validation images
                    continue
                try:
                    image = load_image(path)
                    image.load()
                except Exception as error:  # noqa: BLE001 (a damaged photo is reported, never fatal)
                    self.skipped.append(f"{path} ({error})")
                    continue
                self.images.extend([image] * repeat)
                self.names.extend([str(path)] * repeat)

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int):
        return self.images[index]


# ---------------------------------------------------------------------------------------------- campaign state


def _save_tensors(tensors: dict[str, torch.Tensor], folder: Path, stem: str) -> list[str]:
    """Save ``tensors`` as ``stem.safetensors``, or in shards ``stem-00001-of-0000N.safetensors`` of at most
    16 MB each (huggingface_hub's splitter, as ``save_pretrained`` shards)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern=stem + "{suffix}.safetensors", max_shard_size=MAX_FILE_BYTES
    )
    for old in folder.glob(f"{stem}*.safetensors"):
        old.unlink()
    for filename, names in split.filename_to_tensors.items():
        save_file({name: tensors[name] for name in names}, str(folder / filename))
        follow_umask(folder / filename)  # safetensors creates files 0600: readable by others, as open() would
    return sorted(split.filename_to_tensors)


def _load_tensors(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob(f"{stem}*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def save_campaign(folder: Path, state: dict, encoder, ema, optimizer) -> None:
    """Write the campaign state (see the module docstring). ``campaign.json`` is written last and atomically, so
    a run killed while saving leaves the previous complete state readable (its step matches the tensor files
    only if they were fully replaced: they are written first, then the JSON that names the new step)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in encoder.named_parameters()]
    _save_tensors(encoder.state_dict(), folder, "student")
    _save_tensors(dict(zip(names, ema.shadow_params)), folder, "ema")
    optimizer_state = optimizer.state_dict()
    moments = {}
    scalars = {}
    for index, entry in optimizer_state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                moments[f"{names[index]}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = float(value)
    _save_tensors(moments, folder, "optimizer")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(folder / "rng.safetensors"))
    follow_umask(folder / "rng.safetensors")
    state["optimizer"] = {"scalars": scalars, "param_groups": optimizer_state["param_groups"]}
    state["ema"] = {"optimization_step": ema.optimization_step, "decay": ema.decay}
    write_state(folder, state)
    for path in folder.iterdir():
        if path.stat().st_size > MAX_FILE_BYTES:
            raise RuntimeError(f"{path} is {path.stat().st_size} bytes, over the {MAX_FILE_BYTES}-byte file limit.")


def write_state(folder: Path, state: dict) -> None:
    """Write ``campaign.json`` atomically (a temporary file renamed into place)."""
    temporary = folder / (CAMPAIGN_FILE + ".tmp")
    temporary.write_text(json.dumps(state, indent=1))
    os.replace(temporary, folder / CAMPAIGN_FILE)


def load_campaign_tensors(folder: Path, state: dict, encoder, ema, optimizer) -> None:
    """Restore weights, EMA, optimizer and RNG saved by :func:`save_campaign` into freshly built objects."""
    encoder.load_state_dict(_load_tensors(folder, "student"))
    names = [name for name, _ in encoder.named_parameters()]
    shadow = _load_tensors(folder, "ema")
    device = next(encoder.parameters()).device
    ema.shadow_params = [shadow[name].to(device) for name in names]
    ema.optimization_step = state["ema"]["optimization_step"]
    moments = _load_tensors(folder, "optimizer")
    optimizer_state = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
    for key, value in state["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        optimizer_state["state"].setdefault(int(index), {})[name] = torch.tensor(value)
    for index, name in enumerate(names):
        for key in ("exp_avg", "exp_avg_sq"):
            if f"{name}.{key}" in moments:
                optimizer_state["state"].setdefault(index, {})[key] = moments[f"{name}.{key}"]
    optimizer.load_state_dict(optimizer_state)
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


# ----------------------------------------------------------------------------------------------------- one run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaign", required=True, help="campaign folder (created with --create)")
    parser.add_argument("--create", action="store_true", help="start a new campaign in --campaign (must not exist)")
    for field in dataclasses.fields(CampaignSettings):
        kind = {"int": int, "float": float}.get(field.type, str)  # annotations are strings here
        parser.add_argument(
            f"--{field.name}", type=kind, default=None, help=f"new campaigns (default: {field.default})"
        )
    parser.add_argument("--train_data_dir", nargs="+", required=True, help="folders of training photos")
    parser.add_argument("--train_data_repeats", nargs="+", type=int, default=None, help="sampling weight per folder")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time of this run (excludes eval)")
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many steps of this run")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--mixed_precision", default=None, choices=["no", "bf16"], help="default: bf16 on cuda")
    parser.add_argument(
        "--channels_last",
        action="store_true",
        help="train in channels_last (eager GroupNorm is slower on NHWC tensors at these widths; off by default)",
    )
    parser.add_argument("--num_workers", type=int, default=None, help="crop workers (default: cores - 2)")
    parser.add_argument("--save_minutes", type=float, default=2.0, help="save the campaign this often")
    parser.add_argument("--eval_dir", default=None, help="Kodak-24 folder: evaluate after training")
    parser.add_argument("--eval_resolutions", default="256,512,native")
    parser.add_argument("--output_dir", default=None, help="where this run's model, curve and evaluation go")
    parser.add_argument("--log_every", type=int, default=25)
    parser.add_argument(
        "--export_only",
        action="store_true",
        help="train nothing: write the campaign's EMA model (and its evaluation, with --eval_dir) to --output_dir",
    )
    return parser.parse_args(argv)


def campaign_settings(args: argparse.Namespace, folder: Path) -> tuple[CampaignSettings, dict]:
    """The settings and saved state of the campaign (created from the flags with ``--create``)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(CampaignSettings)}
    given = {name: value for name, value in given.items() if value is not None}
    if args.create:
        if (folder / CAMPAIGN_FILE).exists():
            raise SystemExit(f"error: campaign {folder} exists; drop --create to continue it.")
        settings = CampaignSettings(**given)
        state = {"step": 0, "images_seen": 0, "seconds": {}, "curve": [], "evaluations": [], "runs": []}
        state["init_record"] = _init_record(settings.init_from)
        return settings, state
    if not (folder / CAMPAIGN_FILE).is_file():
        raise SystemExit(f"error: no {CAMPAIGN_FILE} in {folder}; start a campaign with --create.")
    state = json.loads((folder / CAMPAIGN_FILE).read_text())
    settings = CampaignSettings(**state["settings"])
    changed = {k: v for k, v in given.items() if getattr(settings, k) != v}
    if changed:
        raise SystemExit(f"error: {changed} differ from the campaign's settings, which are fixed at creation.")
    return settings, state


def _init_record(init_from: str | None) -> dict:
    """The command and note of the ``--init_from`` model's own ``distillation.json`` (its earlier stages), if any."""
    from diffusers_litevae.vae_io import resolve_vae_location

    if not init_from:
        return {}
    path = Path(resolve_vae_location(init_from)) / "distillation.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {key: record[key] for key in ("command", "note") if key in record}


def _gpu_utilisation() -> float | None:
    try:
        return float(torch.cuda.utilization())
    except Exception:  # noqa: BLE001 (needs pynvml; the data-wait share is logged regardless)
        return None


def run(args: argparse.Namespace) -> dict:
    folder = Path(args.campaign)
    settings, state = campaign_settings(args, folder)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mixed_precision = args.mixed_precision or ("bf16" if device.type == "cuda" else "no")
    torch.manual_seed(settings.seed)

    teacher = load_teacher(settings.teacher)
    encoder_spec, initial = settings.student, None
    if settings.init_from:
        encoder_spec, initial = initial_encoder(settings.init_from, teacher)
    student = teacher.make_student(encoder_spec)
    encoder = student.encoder
    if initial is not None and not state["step"]:
        encoder.load_state_dict(initial)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    encoder.to(device, memory_format=memory_format).train()
    teacher.to(device, dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float32)
    teacher.to(memory_format=memory_format)
    teacher.memory_format = memory_format

    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=device.type == "cpu")
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99), weight_decay=0)
    ema = EMAModel(encoder.parameters(), decay=settings.ema_decay)
    if state["step"]:
        load_campaign_tensors(folder, state, encoder, ema, optimizer)
    encoder, optimizer = accelerator.prepare(encoder, optimizer)
    if args.export_only:
        export_and_evaluate(args, folder, state, student, accelerator.unwrap_model(encoder), ema, teacher, device)
        return state
    loss_fn = DistillationLoss(settings.loss_weights(), latent_scale=teacher.normalization.scale_std)

    repeats = args.train_data_repeats or [1] * len(args.train_data_dir)
    images = DecodedImages(args.train_data_dir, repeats)
    schedule = ResolutionSchedule.parse(settings.resolution_schedule)
    dataset = RandomCropDataset(images, flip=True, scale_range=parse_scale_range(settings.crop_scales))
    start_step = state["step"]
    end_step = start_step + (args.max_steps if args.max_steps is not None else 10**9)
    sampler = StepIndexedBatchSampler(
        len(images), settings.batch_size, schedule, settings.seed, start_step=start_step, end_step=end_step
    )
    workers = args.num_workers if args.num_workers is not None else max(0, (os.cpu_count() or 2) - 2)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=8 if workers > 0 else None,
    )
    logger.info(
        "campaign %s: step %d, %d images seen; %d training photos (%d listed with repeats), %d unreadable; %s, %s",
        folder, start_step, state["images_seen"], len(set(images.names)), len(images), len(images.skipped),
        device, mixed_precision,
    )  # fmt: skip

    step, run_images, wait_s, window = start_step, 0, 0.0, []
    before = {"images_seen": state["images_seen"], "seconds": dict(state["seconds"]), "runs": list(state["runs"])}

    def save() -> None:
        if step == 0:  # a new campaign that has not trained: its weights are --init_from's (or a fresh student's)
            state["settings"] = dataclasses.asdict(settings)
            folder.mkdir(parents=True, exist_ok=True)
            write_state(folder, state)
            return
        elapsed = time.perf_counter() - started
        _record_run(state, before, settings, step, run_images, elapsed, device, wait_s)
        save_campaign(folder, state, accelerator.unwrap_model(encoder), ema, optimizer)

    started = last_save = time.perf_counter()
    batches = iter(loader)
    while step < end_step and time.perf_counter() - started < args.minutes * 60:
        waited = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        wait_s += time.perf_counter() - waited
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate_at(step)
        components = distill_step(
            accelerator, encoder, teacher, loss_fn, [batch["pixel_values"]], optimizer, None, ema,
            settings.max_grad_norm, channels_last=args.channels_last,
        )  # fmt: skip
        step, run_images = step + 1, run_images + batch["pixel_values"].shape[0]
        window.append(components)
        if step % args.log_every == 0:
            state["curve"].append(
                _log_entry(state, before, schedule, step, run_images, started, wait_s, window, device)
            )
            window = []
            print(json.dumps(state["curve"][-1]), flush=True)
        if time.perf_counter() - last_save > args.save_minutes * 60:
            save()
            last_save = time.perf_counter()
    save()
    if state["runs"]:
        print(json.dumps({"run": state["runs"][-1]}), flush=True)
    if args.output_dir:
        export_and_evaluate(args, folder, state, student, accelerator.unwrap_model(encoder), ema, teacher, device)
    return state


def command_line() -> str:
    """This run's command, for the campaign's record."""
    return shlex.join(["python", "conversion/distill_campaign.py", *sys.argv[1:]])


def _log_entry(state, before, schedule, step, run_images, started, wait_s, window, device) -> dict:
    """One curve entry: the mean loss components since the last entry, throughput and the data-wait share."""
    elapsed = time.perf_counter() - started
    means = {name: float(torch.stack([w[name] for w in window]).mean()) for name in window[0]}
    return {
        "step": step,
        "images_seen": before["images_seen"] + run_images,
        "resolution": schedule.resolution_at(step - 1),
        "images_per_s": round(run_images / elapsed, 1),
        "data_wait_share": round(wait_s / elapsed, 3),
        "gpu_utilisation": _gpu_utilisation() if device.type == "cuda" else None,
        **{name: round(value, 6) for name, value in means.items()},
    }


def _record_run(state, before, settings, step, run_images, elapsed, device, wait_s) -> None:
    """Bring ``state`` up to this run's progress (idempotent: each save of the run replaces its record)."""
    kind = "gpu" if device.type == "cuda" else "cpu"
    seconds = dict(before["seconds"])
    seconds[kind] = round(seconds.get(kind, 0.0) + elapsed, 1)
    record = {
        "command": command_line(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "end_step": step,
        "images": run_images,
        "train_seconds": round(elapsed, 1),
        "images_per_s": round(run_images / max(elapsed, 1e-9), 1),
        "data_wait_share": round(wait_s / max(elapsed, 1e-9), 3),
    }
    state.update(
        settings=dataclasses.asdict(settings),
        step=step,
        images_seen=before["images_seen"] + run_images,
        seconds=seconds,
        runs=before["runs"] + [record],
    )


def export_and_evaluate(args, folder: Path, state: dict, student, encoder, ema, teacher, device) -> None:
    """Save the EMA weights as a model folder, draw the curve, and run ``litevae eval`` beside the teacher."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        ema.store(encoder.parameters())
        ema.copy_to(encoder.parameters())
        student.encoder.load_state_dict({k: v.float().cpu() for k, v in encoder.state_dict().items()})
        ema.restore(encoder.parameters())
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    save_pretrained(student.to("cpu", torch.float32), model_dir)
    record = distillation_record(state, student, teacher)
    (model_dir / "distillation.json").write_text(json.dumps(record, indent=1))
    if not args.eval_dir:
        plot_campaign(state, folder.name, out / "curve.png")
        return
    command = [
        sys.executable, "-m", "diffusers_litevae.cli", "eval", "--vae", f"{model_dir}:campaign",
        "--vae", f"{state['settings']['teacher']}:teacher", "--image_dir", args.eval_dir,
        "--resolution", args.eval_resolutions, "--no_resize", "--skip_lpips", "--skip_rfid", "--skip_speed",
        "--grid_images", "2", "--device", device.type, "--output_dir", str(out / "eval"),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    evaluation = {
        "step": state["step"],
        "images_seen": state["images_seen"],
        "train_seconds": round(sum(state["seconds"].values()), 1),
        "command": " ".join(command),
    }
    evaluation.update(_gaps(summary))
    state["evaluations"].append(evaluation)
    write_state(folder, state)
    plot_campaign(state, folder.name, out / "curve.png")
    print(json.dumps({"evaluation": evaluation}), flush=True)


def distillation_record(state: dict, student, teacher) -> dict:
    """The exported folder's ``distillation.json`` (what its model card reports): the campaign's settings, runs,
    images and device minutes, its Kodak-24 evaluations as the curve, and the earlier stages of the ``--init_from``
    model (its record's command and note, kept in the campaign when it was created)."""
    from diffusers_litevae.models.litevae_encoder import preset_name_of

    settings = state["settings"]
    earlier = state.get("init_record") or {}
    seconds = sum(state["seconds"].values())
    minutes = ", ".join(f"{value / 60:.1f} {kind.upper()} minutes" for kind, value in state["seconds"].items())
    devices = sorted({run["device"] for run in state["runs"]})
    campaign_command = "\n".join(run["command"] for run in state["runs"] if run.get("command"))
    note = (
        f"Continued from {settings.get('init_from') or 'a fresh ' + settings['student'] + ' encoder'} by a resumable "
        f"distillation campaign (conversion/distill_campaign.py): {state['images_seen']} images in {minutes} "
        f"({', '.join(devices)}), crops {settings['resolution_schedule']} px at scales {settings['crop_scales']}."
    )
    if earlier.get("note"):
        note += f" Earlier stages: {re.sub(r'curve[.]png[^.]*[.] *', '', earlier['note'])}"
    curve = [
        {
            "step": entry["step"],
            "images_seen": entry["images_seen"],
            "wall_time_s": entry.get("train_seconds"),
            "psnr_student": entry["psnr"].get("256"),
            "psnr_teacher": entry["psnr_teacher"].get("256"),
        }
        for entry in state["evaluations"]
    ]
    final = {}
    if state["evaluations"]:
        last = state["evaluations"][-1]
        final = {
            "step": state["step"],
            "images_seen": state["images_seen"],
            "psnr_student": last["psnr"].get("256"),
            "psnr_teacher": last["psnr_teacher"].get("256"),
            "eval_images": 24,
            "eval_set": "Kodak-24, 256 px centre crops (litevae eval --no_resize)",
        }
    encoder_config = {k: normalize_sequences(v, list) for k, v in student.config.items() if k.startswith("encoder_")}
    return {
        "teacher": teacher.describe(),
        "student": {
            "preset": preset_name_of(student.config),
            "init_from": settings.get("init_from"),
            "encoder_config": encoder_config,
            "encoder_parameters": sum(p.numel() for p in student.encoder.parameters()),
        },
        "settings": settings,
        "campaign": {key: state[key] for key in ("step", "images_seen", "seconds", "runs")},
        "command": "\n".join(filter(None, [earlier.get("command"), "# campaign", campaign_command])),
        "final_metrics": final,
        "curve": curve,
        "wall_time_s": round(seconds, 1),
        "train_images_per_s": round(state["images_seen"] / seconds, 1) if seconds else None,
        "note": note,
    }


def plot_campaign(state: dict, name: str, path: Path) -> None:
    """The loss curve of every run so far, and the Kodak-24 PSNR at 256 px crops of every evaluation."""
    keep = ("step", "latent", "reconstruction", "total")
    losses = [{key: value for key, value in entry.items() if key in keep} for entry in state["curve"]]
    curve = [
        {"step": entry["step"], "psnr": entry["psnr"]["256"], "psnr_teacher": entry["psnr_teacher"]["256"]}
        for entry in state["evaluations"]
        if "256" in entry.get("psnr", {})
    ]
    title = f"campaign {name}: {state['images_seen']} images, {sum(state['seconds'].values()) / 60:.1f} minutes"
    plot_curve(curve, losses, path, title=title, psnr_key="psnr", psnr_label="Kodak-24, 256 px crops")


def _gaps(summary: dict) -> dict:
    """PSNR of the campaign's model and of the teacher per evaluated size, and the gap, from ``summary.json``."""
    psnr, teacher, gap = {}, {}, {}
    for size, entry in summary.get("sizes", {}).items():
        models = entry["models"] if "models" in entry else entry
        ours, theirs = models["campaign"]["psnr"], models["teacher"]["psnr"]
        psnr[size], teacher[size], gap[size] = round(ours, 3), round(theirs, 3), round(theirs - ours, 3)
    return {"psnr": psnr, "psnr_teacher": teacher, "gap_db": gap}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
