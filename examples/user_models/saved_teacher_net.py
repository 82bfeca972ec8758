"""The teacher class of the saved-teacher examples (saved_teacher_make.py trains it; saved_teacher_ckpt.yaml names
it to load a Lightning-style checkpoint of it). A program file (ONNX, TorchScript, .pt2) needs no class at all."""
from torch import nn


class SensorTeacher(nn.Module):
    """A 1-D CNN over (channels, length) windows: two conv blocks, global pooling, a linear head."""

    def __init__(self, in_channels: int = 3, n_outputs: int = 4, width: int = 16) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Conv1d(in_channels, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Conv1d(width, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.head(self.pool(self.blocks(x)).flatten(1))
