"""Your own model classes, used by name from a recipe (import_path.yaml): ``model: ./nets.py:WristNet``.

edgedistill fills ``in_channels``, ``n_outputs`` and ``input_size`` from the data when a constructor takes them
and the recipe does not set them; every other recipe key of the section is passed as a keyword argument.
Feature losses tap submodules by path (``blocks.1``), as ``print(dict(model.named_modules()))`` lists them.
"""
from torch import nn


def conv_block(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation),
                         nn.BatchNorm1d(c_out), nn.ReLU())


class WristNet(nn.Module):
    """A small 1-D CNN for a wrist-worn sensor: ``depth`` conv blocks of ``width`` channels, global pooling, a head."""

    def __init__(self, in_channels: int, n_outputs: int, width: int = 16, depth: int = 2, kernel: int = 5) -> None:
        super().__init__()
        chans = [in_channels] + [width] * depth
        self.blocks = nn.Sequential(*[conv_block(a, b, kernel) for a, b in zip(chans, chans[1:])])
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.head(self.pool(self.blocks(x)).flatten(1))


class WristTeacher(nn.Module):
    """A bigger teacher: wider dilated conv blocks (a growing receptive field) and dropout before the head."""

    def __init__(self, in_channels: int, n_outputs: int, width: int = 64, depth: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        chans = [in_channels] + [width] * depth
        self.blocks = nn.Sequential(*[conv_block(a, b, 5, dilation=2 ** i) for i, (a, b) in enumerate(zip(chans, chans[1:]))])
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_outputs))

    def forward(self, x):
        return self.head(self.pool(self.blocks(x)).flatten(1))
