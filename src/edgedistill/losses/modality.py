"""Modality-level Gram relation distillation (Liu, "Multi-Modality Distillation via Learning the teacher's
modality-level Gram Matrix", arXiv 2112.11447).

What the paper's abstract establishes: the student learns the relations *among modalities* (sensor streams) that
the teacher's features hold, through the teacher's modality-level Gram matrix. Its exact normalisation and distance
are not public. The form here is the one consistent with the abstract: per sample, stack the M modality-level
embeddings into ``F`` (M x d), ``G = F F^T`` (M x M), and match the student's G to the teacher's with the mean
squared difference over the batch and the M x M entries. G is M x M whatever the width d, so a student and a
teacher of different widths need no projection.

``normalize`` is our addition (the paper's is unknown): ``none`` is the form above (the spec's test vector);
``dim`` divides G by d, so the term does not grow with the width; ``cosine`` unit-normalises each modality
embedding first, so G holds the cosine similarities between modalities and networks of very different scales
compare on one footing.

Where the per-modality embeddings come from is the regime's business: method ``modality_gram``
(``methods/modality_gram.py``) runs each network on each channel view and stacks the tapped embeddings
(docs/losses/modality_gram.md).
"""
from __future__ import annotations

import torch

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import same_batch
from edgedistill.losses.feature import unit_rows
from edgedistill.registry import LOSSES

NORMALIZATIONS = ("none", "dim", "cosine")


def modality_gram_matrix(feats: torch.Tensor, normalize: str = "none") -> torch.Tensor:
    """(N, M, d) per-modality embeddings -> (N, M, M) Gram matrices F F^T (``normalize``: none, dim or cosine)."""
    if normalize not in NORMALIZATIONS:
        raise UserInputError(f"modality_gram: normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    f = feats.reshape(feats.shape[0], feats.shape[1], -1)
    if normalize == "cosine":
        f = unit_rows(f.reshape(-1, f.shape[2])).reshape(f.shape)
    g = f @ f.transpose(1, 2)
    return g / f.shape[2] if normalize == "dim" else g


def _stacked(name: str, t: torch.Tensor) -> None:
    if t.dim() < 3:
        raise UserInputError(
            f"modality_gram: {name} must be per-modality embeddings (N, M, d), one row per modality (sensor stream), "
            f"got shape {tuple(t.shape)}; in a recipe, use method 'modality_gram' with method.params.views, which "
            "runs each network on each channel view and stacks the embeddings"
        )
    if t.shape[1] < 2:
        raise UserInputError(f"modality_gram: {name} holds {t.shape[1]} modality; a relation needs at least 2")


@LOSSES.register("modality_gram")
def modality_gram(student_emb: torch.Tensor, teacher_emb: torch.Tensor, normalize: str = "none") -> torch.Tensor:
    """Modality-level Gram matching: mean over the batch and M x M entries of (G_s - G_t)^2, G = F F^T of each
    sample's (M, d) modality embeddings (the inferred form of Liu 2021; widths may differ, M must match).
    ``normalize``: none (the spec's form), dim (G / d) or cosine (unit modality embeddings): our options."""
    _stacked("student_emb", student_emb)
    _stacked("teacher_emb", teacher_emb)
    same_batch("modality_gram", "student_emb", student_emb, "teacher_emb", teacher_emb)
    if student_emb.shape[1] != teacher_emb.shape[1]:
        raise UserInputError(f"modality_gram: student_emb has {student_emb.shape[1]} modalities but teacher_emb has "
                             f"{teacher_emb.shape[1]}; both networks must see the same views")
    return (modality_gram_matrix(student_emb, normalize) - modality_gram_matrix(teacher_emb, normalize)).pow(2).mean()


__all__ = ["modality_gram", "modality_gram_matrix", "NORMALIZATIONS"]
