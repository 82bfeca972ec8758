"""PI-Net: a 1-D CNN that maps a (preprocessed) window to its persistence images, a fast PI source.

Signal PI-Net (Som et al., CVPR-W 2020, arXiv 1906.01769; code anirudhsom/PI-Net, Keras). Architecture as
specified: four blocks of
Conv1d(k=3, same) -> BatchNorm -> ReLU, the first three followed by MaxPool(3, stride 2, same), then global average
pooling -> Linear(C' R R) -> ReLU -> reshape (C', R, R); MSE to the exact PIs (each in [0, 1]). Our choices (CPU
budget, not the paper's): widths default to (32, 64, 128, 256) instead of (128, 256, 512, 1024), and plain Adam
(lr 1e-3, default betas/eps, cosine decay) for ``epochs`` epochs instead of Adam(beta1 0.99, eps 0.1) for 1000.

A PI-Net is not a classifier, so it is not in the model zoo; ``edgedistill topo pinet`` trains one and writes a
checkpoint that ``data.topology: {source: pinet, pinet: <file>}`` uses instead of gudhi.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from edgedistill.errors import UserInputError

CKPT_FORMAT = 1


class PINet(nn.Module):
    """(B, C, L) preprocessed windows -> (B, C_out, R, R) non-negative PIs."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int,
                 widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        blocks = []
        for i in range(len(widths)):
            block = nn.Sequential(nn.Conv1d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                                  nn.BatchNorm1d(chans[i + 1]), nn.ReLU())
            if i < len(widths) - 1:
                block.append(nn.MaxPool1d(3, stride=2, padding=1))
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(widths[-1], out_channels * resolution * resolution)
        self.out_shape = (out_channels, resolution, resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pool(self.blocks(x)).flatten(1)
        return torch.relu(self.head(z)).view(x.shape[0], *self.out_shape)


def train_pinet(x_train: np.ndarray, y_train: np.ndarray, x_val: Optional[np.ndarray] = None,
                y_val: Optional[np.ndarray] = None, widths: tuple[int, ...] = (32, 64, 128, 256), epochs: int = 200,
                batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                log: Optional[Any] = None) -> tuple[PINet, dict[str, float]]:
    """Fit a PI-Net on preprocessed windows ``x_*`` (N, C, L) -> exact PIs ``y_*`` (N, C', R, R) by MSE.
    Returns the model of the best validation MSE (the last epoch without validation) and its metrics."""
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.float32)
    if yt.ndim != 4 or yt.shape[2] != yt.shape[3] or len(xt) != len(yt):
        raise UserInputError(f"pinet: targets must be (n, channels, R, R) PIs for the n windows, got {tuple(yt.shape)}")
    net = PINet(xt.shape[1], yt.shape[1], yt.shape[2], tuple(widths))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    best: dict[str, float] = {"val_mse": math.inf}
    best_state = None
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            loss = nn.functional.mse_loss(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        val = pinet_mse(net, x_val, y_val) if x_val is not None and y_val is not None else math.nan
        if math.isnan(val) or val < best["val_mse"]:
            best = {"epoch": epoch, "train_mse": total / len(xt), "val_mse": val}
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if log is not None and (epoch % 20 == 0 or epoch == epochs - 1):
            log(f"pinet epoch {epoch + 1}/{epochs}: train MSE {total / len(xt):.5f}, val MSE {val:.5f}")
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    return net, best


@torch.no_grad()
def pinet_forward(net: PINet, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    net.eval()
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return torch.cat([net(b) for b in xt.split(batch_size)]).numpy() if len(xt) else np.zeros((0, *net.out_shape), np.float32)


def pinet_mse(net: PINet, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((pinet_forward(net, x) - np.asarray(y, dtype=np.float32)) ** 2))


def save_pinet(net: PINet, path: Path, params: dict[str, Any], length: int, metrics: dict[str, float]) -> None:
    """Checkpoint: weights, architecture and the PI parameters the targets were computed with (atomic write)."""
    from edgedistill.io import atomic_write

    payload = {"format": CKPT_FORMAT, "state_dict": net.state_dict(), "in_channels": net.blocks[0][0].in_channels,
                "out_shape": list(net.out_shape), "widths": [b[0].out_channels for b in net.blocks],
                "length": int(length), "params": params, "metrics": metrics}
    atomic_write(Path(path), lambda fh: torch.save(payload, fh), mode="wb")


def load_pinet(path: Path) -> tuple[PINet, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"data.topology.pinet: '{path}' does not exist (train one with `edgedistill topo pinet`)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UserInputError(f"data.topology.pinet: '{path}' is not a PI-Net checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise UserInputError(f"data.topology.pinet: '{path}' is not a PI-Net checkpoint of format {CKPT_FORMAT}")
    c_out, r, _ = ck["out_shape"]
    net = PINet(ck["in_channels"], c_out, r, tuple(ck["widths"]))
    net.load_state_dict(ck["state_dict"])
    return net.eval(), ck


def predict_pis(path: Optional[Path], x_pre: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """(N, C', R, R) float32 PIs of preprocessed windows predicted by the PI-Net at ``path``; its PI parameters,
    channel count and window length must match the recipe's."""
    if path is None:
        raise UserInputError("data.topology.pinet: source 'pinet' needs a PI-Net checkpoint path")
    net, ck = load_pinet(path)
    diff = sorted(k for k in set(params) | set(ck["params"]) if params.get(k) != ck["params"].get(k))
    if diff:
        raise UserInputError(f"data.topology: the PI-Net '{path}' was trained with other PI parameters ("
                             + ", ".join(f"{k}: {ck['params'].get(k)!r} vs recipe {params.get(k)!r}" for k in diff) + ")")
    if x_pre.shape[1] != ck["in_channels"] or x_pre.shape[2] != ck["length"]:
        raise UserInputError(f"data.topology.pinet: '{path}' takes windows of {ck['in_channels']} channels x "
                             f"{ck['length']} samples, the data has {x_pre.shape[1]} x {x_pre.shape[2]}")
    # Exact PIs are max-normalised per channel; clip the prediction to the same [0, 1] range.
    return np.clip(pinet_forward(net, x_pre), 0.0, 1.0).astype(np.float32)


def time_per_1000(fn: Any, n: int, repeats: int = 1) -> float:
    """Best wall-clock seconds of ``fn()`` over ``repeats``, scaled to 1000 windows (``fn`` handles n)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0 / max(1, n)
