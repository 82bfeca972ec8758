import os

import pytest
import torch

# Keep trained-model caches inside the test's temp folders, and tests single-process and quick.
# Under pytest-xdist (make test runs one worker per core) each worker keeps one thread: two threads
# per worker on a shared core oversubscribe OpenMP and run several times slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.chdir(tmp_path)
