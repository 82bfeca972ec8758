"""Contrastive representation distillation (CRD; Tian, Krishnan, Isola, ICLR 2020), RepDistiller's NCE form.

The loss has trainable parts (two embedding heads) and state (two memory banks of past embeddings, one
per network, and the NCE normalisers), so it is an ``nn.Module``. The maths is kept in small pure
functions (``crd_scores``, ``nce_loss``, ``memory_update``) that the module calls and the tests check
against the reference values.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import positive
from edgedistill.registry import LOSSES

# ContrastLoss's epsilon in the official code, kept so the golden values match.
_NCE_EPS = 1e-7


def crd_scores(
    anchor: torch.Tensor, memory: torch.Tensor, idx: torch.Tensor, temperature: float, z: Union[torch.Tensor, float] = 1.0
) -> torch.Tensor:
    """Unnormalised NCE scores exp(memory[idx_ij] . anchor_i / T) / Z, shape (N, K+1).

    ``anchor`` (N, d) are L2-normalised embeddings of one network, ``memory`` (n_data, d) the other
    network's bank and ``idx`` (N, K+1) the rows to compare (column 0 = the positive). The bank is read
    without gradient: it is a running record, not a parameter.
    """
    rows = memory.detach()[idx]  # (N, K+1, d)
    dots = torch.einsum("nkd,nd->nk", rows, anchor)
    return torch.exp(dots / temperature) / z


def crd_normaliser(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """Z = mean(exp scores) * n_data, so scores / Z average to 1/n_data (the official code's constant)."""
    return scores.detach().mean() * n_data


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """NCE loss of one side: -(1/N) sum_i [log h(P_i0) + sum_j log(1 - h(P_ij))], h(P) = P / (P + K/n_data).

    ``scores`` (N, K+1), column 0 the positive. Noise probability Pn = 1/n_data, K = number of
    negatives; the 1e-7 in the denominators is the official code's. Reduction: sum over a row's K+1
    terms, mean over the N anchors.
    """
    k = scores.shape[1] - 1
    noise = k / n_data
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + _NCE_EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + _NCE_EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


def memory_update(memory: torch.Tensor, index: torch.Tensor, emb: torch.Tensor, momentum: float) -> torch.Tensor:
    """New bank rows for ``index``: normalize(momentum * memory[index] + (1 - momentum) * emb), shape (N, d)."""
    return F.normalize(momentum * memory[index] + (1.0 - momentum) * emb.detach(), p=2, dim=1)


@LOSSES.register("crd")
class CRD(nn.Module):
    """Contrastive representation distillation: NCE against memory banks of embeddings, both directions (Tian et al. 2020).

    Heads g_s, g_t (Linear to ``feat_dim`` + L2-normalise) are trainable. For each anchor the positive is
    its own dataset row (``index``) and K = min(nce_k, n_data - 1) negatives are drawn: from rows of OTHER
    classes when ``train_labels`` is given (RepDistiller's 'exact' mode; with replacement only when that
    pool has fewer than K rows), else from all other rows without replacement. Loss = NCE(student anchor
    vs teacher bank) + NCE(teacher anchor vs student bank), each a mean over anchors. Banks are updated
    with momentum ``nce_m`` after the loss is computed. Z normalisers are fixed at the first forward.
    In eval mode nothing is updated (no bank write, no Z, the sampler does not advance).
    Sampling uses a generator owned by the module, seeded from torch's global RNG at construction; its
    state is a buffer, so a resumed run draws the same negatives as an uninterrupted one.
    """

    def __init__(
        self,
        student_shape: tuple[int, ...],
        teacher_shape: tuple[int, ...],
        n_data: int,
        train_labels: Optional[torch.Tensor] = None,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
    ) -> None:
        super().__init__()
        _check_hyperparameters(n_data, feat_dim, nce_k, nce_t, nce_m)
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
        self.n_data, self.feat_dim, self.nce_t, self.nce_m = int(n_data), int(feat_dim), float(nce_t), float(nce_m)
        self.k = min(int(nce_k), self.n_data - 1)
        self.train_labels = _check_labels(train_labels, self.n_data)
        self.embed_s = nn.Linear(math.prod(self.student_shape), self.feat_dim)
        self.embed_t = nn.Linear(math.prod(self.teacher_shape), self.feat_dim)
        # Banks start as U(-stdv, stdv) with stdv = 1/sqrt(d/3), the official init: rows of norm about 1.
        stdv = 1.0 / math.sqrt(self.feat_dim / 3.0)
        self.register_buffer("memory_s", torch.rand(self.n_data, self.feat_dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("memory_t", torch.rand(self.n_data, self.feat_dim).mul_(2 * stdv).sub_(stdv))
        # Z < 0 means "not set yet"; buffers so a resumed run keeps the constants fixed at its first step.
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        # The sampler's generator lives only as its state in a buffer: checkpointed with the student, and the
        # module stays deep-copyable. Seeded from the global RNG, so torch.manual_seed makes runs repeatable.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.register_buffer("rng_state", torch.Generator().manual_seed(seed).get_state())

    def extra_repr(self) -> str:
        return f"n_data={self.n_data}, feat_dim={self.feat_dim}, K={self.k}, nce_t={self.nce_t}, nce_m={self.nce_m}"

    def sample_indices(self, index: torch.Tensor, advance: bool = True) -> torch.Tensor:
        """(N, K+1) dataset rows on the CPU: column 0 = ``index`` itself, then K negatives per anchor.
        ``advance=False`` leaves the sampler state as it was (the same call gives the same rows again)."""
        gen = torch.Generator()
        gen.set_state(self.rng_state.cpu())
        anchors = index.cpu().long()
        negatives = torch.empty(len(anchors), self.k, dtype=torch.long)
        if self.train_labels is None:
            # Uniform K of the n_data - 1 other rows: rank random keys, then skip over the anchor's own row.
            keys = torch.rand(len(anchors), self.n_data - 1, generator=gen)
            picks = keys.topk(self.k, dim=1).indices
            negatives = picks + (picks >= anchors[:, None]).long()
        else:
            labels = self.train_labels[anchors]
            for c in labels.unique().tolist():
                rows = (labels == c).nonzero().flatten()
                pool = (self.train_labels != c).nonzero().flatten()
                if len(pool) >= self.k:
                    keys = torch.rand(len(rows), len(pool), generator=gen)
                    negatives[rows] = pool[keys.topk(self.k, dim=1).indices]
                else:  # a pool smaller than K can only be filled by drawing with replacement
                    negatives[rows] = pool[torch.randint(len(pool), (len(rows), self.k), generator=gen)]
        if advance:
            self.rng_state.copy_(gen.get_state())
        return torch.cat([anchors[:, None], negatives], dim=1)

    def forward(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        s = self._flat("student_emb", student_emb, self.student_shape)
        t = self._flat("teacher_emb", teacher_emb, self.teacher_shape)
        if s.shape[0] != t.shape[0] or index.shape != (s.shape[0],):
            raise UserInputError(
                f"crd: student_emb has {s.shape[0]} rows, teacher_emb {t.shape[0]} and index shape {tuple(index.shape)};"
                " expected the same N and index of shape (N,)"
            )
        if index.numel() == 0:
            raise UserInputError("crd: got an empty batch")
        if index.dtype.is_floating_point or int(index.min()) < 0 or int(index.max()) >= self.n_data:
            raise UserInputError(f"crd: index must hold integer dataset rows in [0, {self.n_data}), got {index.tolist()}")
        v_s = F.normalize(self.embed_s(s), p=2, dim=1)
        v_t = F.normalize(self.embed_t(t), p=2, dim=1)
        # In eval mode the loss is computed without touching any state (sampler, Z, banks).
        idx = self.sample_indices(index, advance=self.training).to(self.memory_s.device)
        out_s = crd_scores(v_s, self.memory_t, idx, self.nce_t)  # student anchor vs teacher bank
        out_t = crd_scores(v_t, self.memory_s, idx, self.nce_t)  # teacher anchor vs student bank
        z_s, z_t = float(self.z_s), float(self.z_t)
        if z_s < 0:  # first forward: fix the normalisers (python floats, so nothing is saved for backward)
            z_s, z_t = float(crd_normaliser(out_s, self.n_data)), float(crd_normaliser(out_t, self.n_data))
            if self.training:
                self.z_s.fill_(z_s)
                self.z_t.fill_(z_t)
        loss = nce_loss(out_s / z_s, self.n_data) + nce_loss(out_t / z_t, self.n_data)
        if self.training:
            with torch.no_grad():
                rows = idx[:, 0]
                self.memory_s.index_copy_(0, rows, memory_update(self.memory_s, rows, v_s, self.nce_m))
                self.memory_t.index_copy_(0, rows, memory_update(self.memory_t, rows, v_t, self.nce_m))
        return loss

    def _flat(self, name: str, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if tuple(x.shape[1:]) != shape:
            raise UserInputError(f"crd: {name} has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, shape))})")
        dtype = self.embed_s.weight.dtype
        if x.dtype != dtype:
            raise UserInputError(f"crd: {name} is {x.dtype} but the CRD module is {dtype}; convert one to match")
        return x.reshape(x.shape[0], -1)


def _check_hyperparameters(n_data: int, feat_dim: int, nce_k: int, nce_t: float, nce_m: float) -> None:
    if int(n_data) < 2:
        raise UserInputError(f"crd: n_data must be >= 2 (negatives are other rows), got {n_data}")
    for name, value in (("feat_dim", feat_dim), ("nce_k", nce_k)):
        if int(value) != value or value < 1:
            raise UserInputError(f"crd: {name} must be a positive integer, got {value}")
    positive("crd", "nce_t", nce_t)
    if not 0.0 <= nce_m <= 1.0:
        raise UserInputError(f"crd: nce_m must be in [0, 1], got {nce_m}")


def _check_labels(train_labels: Optional[torch.Tensor], n_data: int) -> Optional[torch.Tensor]:
    if train_labels is None:
        return None
    labels = torch.as_tensor(train_labels)
    if labels.dtype.is_floating_point or labels.shape != (n_data,):
        raise UserInputError(
            f"crd: train_labels must be {n_data} integer labels (one per training row),"
            f" got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.unique().numel() < 2:
        raise UserInputError("crd: train_labels hold a single class, so there are no other-class rows for negatives")
    return labels.cpu().long()
