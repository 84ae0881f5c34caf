import os

# Tests never reach the Hugging Face Hub: everything is built locally or mocked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytest-xdist runs one worker per core (pyproject's addopts): one thread each, for the tests and the processes
# they start, instead of every worker's torch spreading over all cores and fighting the others for them.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    torch.set_num_threads(1)

SHARED = Path(os.environ.get("LITEVAE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): the toy
    models' convolutions are dominated by thread synchronisation, and one thread is several times faster for them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (photos, TAEF2 weights); tests needing it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (set LITEVAE_SHARED)")
    return SHARED


@pytest.fixture
def free_port() -> int:
    """A TCP port free right now, for `accelerate launch --main_process_port`: two launches running at once (one
    per test worker) would both take the default 29500."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
