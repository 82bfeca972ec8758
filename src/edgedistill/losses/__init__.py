"""Pure loss functions on tensors (and modules for losses with trainable parts), registered for recipes.

A loss's tensor arguments are named by role, and a method binds them by name: ``student_logits`` /
``student_out`` (the student's outputs), ``teacher_logits`` / ``teacher_out``, ``target`` (labels),
``student_feat`` / ``teacher_feat`` (feature maps read by taps), ``student_emb`` / ``teacher_emb`` (pooled
embeddings), ``index`` (dataset rows). Every other argument is a hyperparameter a recipe term may set
(``{loss: kd, temperature: 4}``). Functions that take no roles (``mmd``, ...) are for methods and
users, not recipe terms, and are not registered.
"""
from __future__ import annotations

from edgedistill.losses.angular import amc, amd, orthogonal_sphere
from edgedistill.losses.contrastive import CRD
from edgedistill.losses.feature import FitNet, Gram, attention_transfer, fitnet, gram, similarity_preserving
from edgedistill.losses.feature_baselines import ICKD, cc, fsp, ickd, kdsvd, nst
from edgedistill.losses.logit_baselines import DistPlus, dist_plus, logit_std, mlkd
from edgedistill.losses.module_baselines import OFD, VID, gaussian_margin, margin_from_bn, ofd, vid_nll
from edgedistill.losses.staged_baselines import AB, FT, ab_loss, ft_factor_loss
from edgedistill.losses.multiteacher import confidence_weights, correlation_orthogonality
from edgedistill.losses.regression import mse, mse_to_teacher
from edgedistill.losses.relation import mmd, pkt, rkd
from edgedistill.losses.response import ce, kd, kl_rows, reverse_kd
from edgedistill.losses.response_extra import balanced_kd, dist, dkd, std_normalized_kd
from edgedistill.losses.reviewkd import ReviewKD, hcl
from edgedistill.losses.modality import modality_gram, modality_gram_matrix
from edgedistill.losses.sequence import similarity_keeping, time_aware_kd, time_aware_regression
from edgedistill.registry import LOSSES

# soft_targets: the loss reads class probabilities in `target` as well as labels (augment.mix).
LOSSES.register("ce", task="classification", soft_targets=True)(ce)
LOSSES.register("kd", task="classification")(kd)
LOSSES.register("reverse_kd", task="classification")(reverse_kd)
LOSSES.register("mse", task="regression")(mse)
# Logit matching (Ba & Caruana) is the same function, so it is allowed on classification logits too.
LOSSES.register("mse_to_teacher")(mse_to_teacher)

__all__ = [
    "ce", "kd", "reverse_kd", "kl_rows", "mse", "mse_to_teacher",
    "dkd", "dist", "std_normalized_kd", "balanced_kd",
    "fitnet", "FitNet", "attention_transfer", "similarity_preserving", "gram", "Gram",
    "rkd", "pkt", "mmd", "CRD",
    "amd", "amc", "orthogonal_sphere", "similarity_keeping", "time_aware_kd",
    "confidence_weights", "correlation_orthogonality",
    "nst", "fsp", "cc", "kdsvd", "ickd", "ICKD", "mlkd", "logit_std", "dist_plus", "DistPlus",
    "FT", "AB", "ft_factor_loss", "ab_loss",
    "VID", "vid_nll", "OFD", "ofd", "margin_from_bn", "gaussian_margin", "ReviewKD", "hcl",
    "modality_gram", "modality_gram_matrix", "time_aware_regression",
]
