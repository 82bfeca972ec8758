"""Train/eval mode helpers shared by every layer above models/."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from torch import nn


@contextlib.contextmanager
def evaluating(*models: Optional[nn.Module]) -> Iterator[None]:
    """Eval mode inside the block, each model's own mode restored after it (``None`` entries are skipped).

    For every probe pass (shape checks on zeros, predictions mid-training, MAC counting): a probe must neither
    move BatchNorm statistics nor leave a network in the wrong mode, even when it raises."""
    nets = [m for m in models if m is not None]
    modes = [m.training for m in nets]
    for m in nets:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(nets, modes):
            m.train(mode)


def nothing_to_train(model: nn.Module) -> bool:
    """No parameter of ``model`` asks for a gradient: a frozen teacher or ensemble (what DDP cannot wrap, and whose
    outputs repeat while the networks beside it train)."""
    return not any(p.requires_grad for p in model.parameters())
