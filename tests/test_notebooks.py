"""The notebooks in ``notebooks/`` run top to bottom headless in small mode and show what they claim.

Each notebook is copied into a temporary working folder and executed with nbclient on the ``python3`` kernel
(ipykernel of this interpreter), with ``LITEVAE_NOTEBOOK_SMALL=1`` (tiny locally built models and synthetic
images) and ``HF_HUB_OFFLINE=1``. A failing cell fails the test with the cell's traceback. The last cell of
every notebook prints ``NOTEBOOK_CHECK {json}``: the facts the notebook demonstrated, asserted here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ("quickstart.ipynb", "distillation.ipynb", "latent_caching.ipynb")
SMALL_MODE_LINE = 'SMALL = os.environ.get("LITEVAE_NOTEBOOK_SMALL", "1") == "1"'
CELL_TIMEOUT_S = 300  # per cell; whole notebooks take well under a minute on 2 cores
CHECK_PREFIX = "NOTEBOOK_CHECK "


def _stream_text(cell) -> str:
    return "".join(
        output.get("text", "") for output in cell.get("outputs", []) if output.get("output_type") == "stream"
    )


def execute_notebook(name: str, tmp_path: Path, monkeypatch) -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``notebooks/<name>`` in small mode inside ``tmp_path``; returns the executed notebook and its check."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(NOTEBOOKS_DIR / name, workdir / name)
    scratch = tmp_path / "tmp"  # the notebooks' tempfile.mkdtemp() folders land here and go with tmp_path
    scratch.mkdir()
    monkeypatch.setenv("LITEVAE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TMPDIR", str(scratch))
    # Toy models on a shared 2-core machine: one thread avoids OpenMP contention (several times faster here).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(workdir / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError (with the traceback) when a cell fails
    last_code_cell = [cell for cell in notebook.cells if cell.cell_type == "code"][-1]
    lines = [line for line in _stream_text(last_code_cell).splitlines() if line.startswith(CHECK_PREFIX)]
    assert len(lines) == 1, f"{name}: the last cell should print one {CHECK_PREFIX!r} line, got {lines}"
    return notebook, json.loads(lines[0][len(CHECK_PREFIX) :])


def _images_shown(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


# ------------------------------------------------------------------------------------------ committed notebooks


def test_notebooks_are_committed_without_outputs_and_have_a_small_mode():
    found = sorted(path.name for path in NOTEBOOKS_DIR.glob("*.ipynb"))
    assert found == sorted(NOTEBOOKS), "a notebook was added or removed: list it in NOTEBOOKS so CI executes it"
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["kernelspec"]["name"] == "python3"
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for index, cell in enumerate(code_cells):
            assert cell.outputs == [], f"{name}: code cell {index} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: code cell {index} has an execution count"
        assert SMALL_MODE_LINE in code_cells[0].source, (
            f"{name}: the first code cell must set SMALL from the environment"
        )
        assert CHECK_PREFIX.strip() in code_cells[-1].source


# ------------------------------------------------------------------------------------------ execution


def test_quickstart_notebook(tmp_path, monkeypatch):
    notebook, check = execute_notebook("quickstart.ipynb", tmp_path, monkeypatch)
    # Text-to-image only decodes, and the LiteVAE decoder is SD-VAE's: the images are identical.
    assert check["txt2img_max_abs_diff"] == 0.0
    # Image-to-image encoded through the swapped-in LiteVAE encoder.
    assert check["img2img_litevae_encoder_calls"] >= 1
    # Real architectures: SD-VAE's encoder (34.16 M) against LiteVAE-B's (6.75 M, paper Table 3).
    assert check["kl_encoder_parameters"] == 34_163_664
    assert 6.7e6 < check["lite_encoder_parameters"] < 6.8e6
    assert set(check["psnr"]) == {"AutoencoderKL (SD-VAE)", "AutoencoderLite"}
    assert all(0 < value < 60 for value in check["psnr"].values())
    assert check["grid_size"][0] > 0 and check["grid_size"][1] > 0
    assert _images_shown(notebook) >= 3  # txt2img pair, img2img pair, reconstruction grid


def test_distillation_notebook(tmp_path, monkeypatch):
    notebook, check = execute_notebook("distillation.ipynb", tmp_path, monkeypatch)
    assert check["steps"] == 40
    # The student learned: validation PSNR up, latent distance to the teacher down.
    assert check["psnr_student_last"] > check["psnr_student_first"] + 0.3
    assert check["latent_mse_last"] < 0.7 * check["latent_mse_first"]
    # The reloaded folder is the trained model: its PSNR on the held-out images matches the run's validation.
    assert abs(check["reload_psnr_student"] - check["psnr_student_last"]) < 0.5
    # The student's decoder is the teacher's, bit for bit.
    assert check["decoder_max_diff"] == 0.0
    assert check["validation_grids"] == 5  # steps 0, 10, 20, 30, 40
    assert check["cli_matches"], "the printed `litevae distill` command does not reproduce the notebook's config"
    assert _images_shown(notebook) >= 4  # examples, curves, two validation grids, reconstructions


def test_latent_caching_notebook(tmp_path, monkeypatch):
    notebook, check = execute_notebook("latent_caching.ipynb", tmp_path, monkeypatch)
    assert check["num_samples"] == 12
    assert check["num_shards"] >= 2  # samples_per_shard=8
    # Five aspect ratios at 64 px with a 16 px step fall into four buckets.
    assert check["buckets"] == [[32, 96], [48, 80], [64, 64], [80, 48]]
    # A cached mean is vae.encode of the preprocessed image, up to bf16 storage rounding.
    assert check["cache_max_error"] < 0.02
    # One image added, one removed, one caption edited: only the new image is encoded.
    assert check["update"] == {"encoded": 1, "unchanged": 11, "removed": 1, "metadata_updates": 1, "samples": 12}
    assert check["edited_caption"] == "an edited caption"
    assert check["training_steps"] >= 2 and check["losses_finite"]
