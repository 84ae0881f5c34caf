"""Encoder throughput sections of ``gpu_suite.py``: the grid (``encoder``) and batch 1 with CUDA graphs (``batch1``).

Both time the same way, through :func:`encoder_cell`: one encoder (what that VAE's ``encode`` runs, random weights,
from ``_core.build_encoder``) on one seeded batch, in one mode, with ``_core.measure`` (the first call, where
compiling and CUDA-graph capture happen, reported apart from throughput). Every record is ``kind="encoder_speed"``,
so the summary's table holds both sections' cells side by side.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from _core import Context, CpuPeakMemory, build_encoder, format_ratio, measure

MODELS = ("S", "B", "sd-vae", "taesd")
REFERENCE = "sd-vae"
# eager; torch.compile (mode --compile_mode); torch.compile with CUDA graphs (mode="reduce-overhead").
MODES = ("eager", "compile", "compile+cudagraphs")
# Published ratios to the SD-VAE encoder, printed beside the measured ones (model -> (ratio, source)).
PAPER_SPEEDUP = {
    "B": (1.9, "LiteVAE paper Table 3: 129 vs 68 img/s, 256 px, batch 32, Quadro RTX 6000"),
    "S": (5.6, "LiteVAE paper Table 3: 384 vs 68 img/s, 256 px, batch 32, Quadro RTX 6000"),
}
# Guesses until a cell of the run has been timed: seconds of one eager cell, and of one compilation (per model and
# shape: dynamo tracing, inductor code generation, and for CUDA graphs the capture).
GUESS = {False: dict(eager=3.0, compile=45.0), True: dict(eager=1.0, compile=10.0)}
# More pixels per call than this and the SD-VAE is skipped: 1024 px x 32 needs tens of GiB of activations under
# bf16 autocast (an out-of-memory risk on 80 GB cards) and about a second per call, for a figure no one uses.
SD_VAE_MAX_PIXELS = 16 * 1024 * 1024
CPU_MEMORY = CpuPeakMemory()  # the resident-set rise of one call (Linux/glibc), for CPU runs


class Encoders:
    """Each model built once (on the CPU) and moved to the device for its cells."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.models: dict[str, nn.Module] = {}

    def get(self, name: str) -> nn.Module:
        if name not in self.models:
            torch.manual_seed(0)
            sd_vae = self.ctx.sd_vae() if name == REFERENCE else None
            self.models[name] = build_encoder(name, sd_vae=sd_vae).eval().requires_grad_(False)
        return self.models[name].to(self.ctx.device, memory_format=self.ctx.memory_format)

    def park(self) -> None:
        for model in self.models.values():
            model.to("cpu")


def encoder_cell(ctx: Context, model: nn.Module, resolution: int, batch: int, mode: str) -> dict:
    """One encoder at one size in one mode: images/s, first-call (compile, capture) time and peak memory."""
    args, device = ctx.args, ctx.device
    images = ctx.images(batch, resolution)
    graphs = mode == "compile+cudagraphs"
    forward = model
    if graphs:
        forward = torch.compile(model, dynamic=False, mode="reduce-overhead")
    elif mode == "compile":
        forward = torch.compile(
            model, dynamic=False, **({} if args.compile_mode == "default" else {"mode": args.compile_mode})
        )

    def call():
        if graphs:  # each call may overwrite the last call's graph outputs: nothing here keeps them
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), ctx.autocast():
            forward(images)

    try:
        # CUDA-graph trees record on the third call: warm up at least that long so that capture is not timed.
        result = measure(
            call,
            device,
            items_per_call=batch,
            warmup=max(args.warmup, 3 if graphs else 1),
            min_time=args.min_time,
            min_calls=args.min_calls,
            max_calls=args.max_calls,
        )
        # Peak memory as encoder_speed.py reports it: weights + input + what one call allocates above them.
        resident = (
            sum(p.numel() * p.element_size() for p in model.parameters()) + images.numel() * images.element_size()
        )
        activations = result.pop("peak_memory_mib")
        if activations is None and CPU_MEMORY.available:
            activations = round(CPU_MEMORY.measure(call), 1)
        result["peak_memory_mib"] = None
        if activations is not None:
            result.update(peak_memory_mib=round(resident / 2**20 + activations, 1), activation_memory_mib=activations)
    finally:
        forward = images = None
        if mode != "eager":
            torch._dynamo.reset()
    result["images_per_s"] = result.pop("items_per_s")
    result["ms_per_batch"] = result.pop("ms_per_call")
    if mode != "eager":
        result["compile_s"] = result["first_call_s"]
    return result


def why_not_compiled(ctx: Context, mode: str) -> str | None:
    """Why ``mode`` cannot run here (``None`` when it can)."""
    if mode == "eager":
        return None
    if ctx.args.no_compile:
        return "--no_compile"
    if mode == "compile+cudagraphs" and not ctx.cuda:
        return f"CUDA graphs need CUDA (device {ctx.device.type}); the eager figure stands for this cell"
    if not ctx.cuda:
        return (
            f"torch.compile is measured on CUDA only (device {ctx.device.type}: compiling costs minutes on a CPU and "
            "is not faster there)"
        )
    return None


def cell_estimate(ctx: Context, name: str, mode: str, resolution: int, batch: int) -> float:
    """Seconds a cell needs, compiling included: the model's longest cell so far scaled by pixels, or a guess."""
    guess = GUESS[ctx.args.smoke]
    seen = ctx.budget.seen(f"encoder {name} eager per Mpx", 0.0) * batch * resolution**2 / 1e6
    estimate = max(seen, guess["eager"]) if seen else guess["eager"]
    if mode != "eager":
        estimate += ctx.budget.seen(f"compile {name}", ctx.budget.seen("compile", guess["compile"]))
    return estimate


def run_encoder_cell(ctx: Context, encoders: Encoders, name: str, resolution: int, batch: int, mode: str, **kw):
    fields = dict(
        model=name,
        resolution=resolution,
        batch_size=batch,
        mode=mode,
        precision=ctx.precision,
        channels_last=ctx.channels_last,
    )
    skip = kw.pop("skip", None) or why_not_compiled(ctx, mode)
    if skip is None and name == REFERENCE and batch * resolution**2 > SD_VAE_MAX_PIXELS:
        skip = (
            f"SD-VAE at {resolution} px x {batch}: tens of GiB of activations, an out-of-memory risk, for a cell "
            "no ratio uses"
        )
    estimate = kw.pop("estimate_s", None) or cell_estimate(ctx, name, mode, resolution, batch)
    record = ctx.run(
        "encoder_speed",
        f"{name} {resolution}px b{batch} {mode}",
        fields,
        lambda: encoder_cell(ctx, encoders.get(name), resolution, batch, mode),
        estimate_s=estimate,
        skip=skip,
        **kw,
    )
    if record["status"] == "ok":
        if mode == "eager":
            ctx.budget.note(f"encoder {name} eager per Mpx", record["duration_s"] / (batch * resolution**2 / 1e6))
        else:
            ctx.budget.note(f"compile {name}", record["first_call_s"])
            ctx.budget.note("compile", record["first_call_s"])
    return record


def encoder_estimate(ctx: Context) -> float:
    """What the grid's eager cells need (its compiled cells take what is left, so nothing is reserved for them)."""
    return sum(cell_estimate(ctx, name, "eager", r, b) for r, b in ctx.args.cells for name in ctx.args.models)


def grid_order(ctx: Context) -> list[str]:
    """The target models first: when the budget runs short, TAESD's cells are what goes."""
    return [m for m in (REFERENCE, "B", "S", "taesd") if m in ctx.args.models]


def encoder_section(ctx: Context) -> None:
    """The grid, eager: every model at every ``--cells`` cell."""
    encoders = Encoders(ctx)
    for resolution, batch in ctx.args.cells:
        for name in grid_order(ctx):
            run_encoder_cell(ctx, encoders, name, resolution, batch, "eager")
    encoders.park()


def compiled_section(ctx: Context) -> None:
    """The grid's compiled modes (``--modes``), last, with what the budget has left: per cell in priority order the
    SD-VAE and LiteVAE-B together (a compiled pair or neither, so that the ratio compares like with like), then S,
    then TAESD."""
    encoders = Encoders(ctx)
    order = grid_order(ctx)
    pair = [m for m in (REFERENCE, "B") if m in order]
    for mode in (m for m in ctx.args.modes if m != "eager"):
        for resolution, batch in ctx.args.cells:
            pair_estimate = sum(cell_estimate(ctx, m, mode, resolution, batch) for m in pair)
            pair_skip = why_not_compiled(ctx, mode) or ctx.budget.check(pair_estimate, ctx.reserve_s)
            for name in order:
                skip = pair_skip if name in pair else None
                run_encoder_cell(ctx, encoders, name, resolution, batch, mode, skip=skip)
    encoders.park()


def batch1_estimate(ctx: Context) -> float:
    models = [m for m in ctx.args.batch1_models]
    return sum(
        cell_estimate(ctx, name, mode, r, 1)
        for r in ctx.args.batch1_resolutions
        for name in models
        for mode in ("eager", "compile+cudagraphs")
        if why_not_compiled(ctx, mode) is None
    )


def batch1_section(ctx: Context) -> None:
    """Batch 1, what a pipeline that encodes one image (img2img, inpainting) runs: eager, then compiled with CUDA
    graphs (``mode="reduce-overhead"``), where launch overhead rather than arithmetic bounds an encoder."""
    encoders = Encoders(ctx)
    for resolution in ctx.args.batch1_resolutions:
        for mode in ("eager", "compile+cudagraphs"):
            for name in ctx.args.batch1_models:
                run_encoder_cell(ctx, encoders, name, resolution, 1, mode)
    encoders.park()


def encoder_table(records: list[dict]) -> dict[str, dict]:
    """Per cell (``"256px_b32"``) and model: img/s in each mode measured, the fastest mode with its first-call time
    and peak memory, and the ratios to the SD-VAE's fastest (speed, with the paper's beside it) and eager memory."""
    table: dict[str, dict] = {}
    for r in records:
        if r["kind"] != "encoder_speed":
            continue
        cell = table.setdefault(f"{r['resolution']}px_b{r['batch_size']}", {}).setdefault(r["model"], {})
        if r["status"] != "ok":
            cell[f"{r['mode']}_status"] = f"{r['status']}: {r.get('reason', '')}"
            continue
        cell[f"{r['mode']}_images_per_s"] = r["images_per_s"]
        cell[f"{r['mode']}_peak_memory_mib"] = r.get("peak_memory_mib")
        if r.get("compile_s") is not None:
            cell[f"{r['mode']}_compile_s"] = r["compile_s"]
        if r["images_per_s"] > cell.get("best_images_per_s", 0):
            cell.update(
                best_mode=r["mode"], best_images_per_s=r["images_per_s"], best_first_call_s=r.get("first_call_s")
            )
    for key, models in table.items():
        reference = models.get(REFERENCE, {})
        for name, cell in models.items():
            if name == REFERENCE:
                continue
            if cell.get("best_images_per_s") and reference.get("best_images_per_s"):
                cell["speedup_vs_sd_vae"] = round(cell["best_images_per_s"] / reference["best_images_per_s"], 3)
                if name in PAPER_SPEEDUP and key.endswith("_b32"):  # the paper measured batch 32
                    cell["beside"] = format_ratio(cell["speedup_vs_sd_vae"], *PAPER_SPEEDUP[name])
            if cell.get("eager_peak_memory_mib") and reference.get("eager_peak_memory_mib"):
                ratio = cell["eager_peak_memory_mib"] / reference["eager_peak_memory_mib"]
                cell["memory_ratio_vs_sd_vae"] = round(ratio, 3)
    return table


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_encoder_table(table: dict[str, dict]) -> None:
    print("\n== encoder speed: each model's fastest mode per cell ==")
    print(
        f"{'cell':12s} {'model':7s} {'mode':20s} {'img/s':>10s} {'x SD-VAE':>9s} {'1st call s':>10s} "
        f"{'eager MiB':>10s} {'mem x SD':>9s}"
    )
    for key, models in table.items():
        for name, cell in models.items():
            if "best_mode" not in cell:
                reasons = [v for k, v in cell.items() if k.endswith("_status")]
                print(f"{key:12s} {name:7s} {(reasons[0] if reasons else '-')[:100]}")
                continue
            print(
                f"{key:12s} {name:7s} {cell['best_mode']:20s} {cell['best_images_per_s']:10.1f} "
                f"{_fmt(cell.get('speedup_vs_sd_vae'), '.2f'):>9s} {_fmt(cell['best_first_call_s']):>10s} "
                f"{_fmt(cell.get('eager_peak_memory_mib'), '.0f'):>10s} "
                f"{_fmt(cell.get('memory_ratio_vs_sd_vae'), '.2f'):>9s}"
            )
            if cell.get("beside"):
                print(f"{'':12s} {'':7s} ratio {cell['beside']}")
