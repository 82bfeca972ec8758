"""Make the files of the saved-teacher examples: a data file and a teacher trained on it "elsewhere" (a plain
PyTorch loop), saved in every form ``teacher: {load: PATH}`` reads (docs/models.md):

    python examples/user_models/saved_teacher_make.py      # writes next to this script
    edgedistill run examples/user_models/saved_teacher.yaml        # the ONNX teacher
    edgedistill run examples/user_models/saved_teacher_ckpt.yaml   # the Lightning-style checkpoint + its class

The teacher sees the data exactly as it was trained on it, so the recipes set ``data.normalize: none``.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from saved_teacher_net import SensorTeacher  # noqa: E402 - the class sits next to this script


def make_data(path: Path, n: int = 300, channels: int = 3, length: int = 32, classes: int = 4) -> None:
    """A learnable toy task (class c adds a bump to channel c % channels), with its own test rows (test_x, test_y)
    that the teacher never trains on."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1.0, (n, channels, length)).astype(np.float32)
    x[np.arange(n), y % channels, :] += 0.2 + 0.2 * y[:, None]
    cut = n * 4 // 5
    np.savez(path, x=x[:cut], y=y[:cut], test_x=x[cut:], test_y=y[cut:])


def train_teacher(path: Path) -> SensorTeacher:
    """The user's own training (here a few full-batch Adam steps on the rows that are not test rows)."""
    data = np.load(path)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"]).long()
    torch.manual_seed(0)
    model = SensorTeacher(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()  # export in eval mode: a program keeps the mode it was saved in


def save_all(model: SensorTeacher, folder: Path, length: int = 32) -> None:
    example = torch.zeros(2, 3, length)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (example,), str(folder / "saved_teacher.onnx"), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), folder / "saved_teacher.pt2")
    torch.jit.save(torch.jit.trace(model, example), str(folder / "saved_teacher.ts.pt"))
    # What a Lightning Trainer writes: the LightningModule's state_dict (its `model.` attribute) plus bookkeeping.
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 39,
                "global_step": 40}, folder / "saved_teacher.ckpt")


def main(out: Path) -> None:
    make_data(out / "saved_teacher_data.npz")
    save_all(train_teacher(out / "saved_teacher_data.npz"), out)
    print(f"wrote saved_teacher_data.npz, .onnx, .pt2, .ts.pt and .ckpt in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
