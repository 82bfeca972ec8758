import os

import pytest
import torch

# Keep trained-model caches inside the test's temp folders, and tests single-process and quick.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.chdir(tmp_path)
