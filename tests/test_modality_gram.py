"""Modality-level Gram relation KD (Liu, arXiv 2112.11447): the loss's spec vector and properties, the channel views,
and the regime that feeds it (each network run on each view, the student's BatchNorm statistics left alone)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.errors import UserInputError
from edgedistill.losses.modality import modality_gram, modality_gram_matrix
from edgedistill.methods.modality_gram import ModalityGram, running_stats_kept, view_masks


def grid(shape, a=0.37, b=0.0):
    """The spec's deterministic test tensor: sin(arange(n) * a + b), reshaped."""
    n = int(np.prod(shape))
    return torch.tensor(np.sin(np.arange(n) * a + b).reshape(shape), dtype=torch.float64)


def test_spec_vector():
    # F_S = grid((2,3,4),0.45), F_T = grid((2,3,4),0.33,0.7): mean squared Gram difference 2.133394.
    got = modality_gram(grid((2, 3, 4), 0.45), grid((2, 3, 4), 0.33, 0.7))
    assert float(got) == pytest.approx(2.133394, abs=1e-6)


def test_a_common_rotation_of_the_feature_space_changes_nothing():
    s, t = grid((3, 4, 5), 0.45), grid((3, 4, 7), 0.33, 0.7)  # widths differ: G is M x M either way
    q_s, _ = torch.linalg.qr(grid((5, 5), 1.3) + torch.eye(5, dtype=torch.float64))
    q_t, _ = torch.linalg.qr(grid((7, 7), 0.9) + torch.eye(7, dtype=torch.float64))
    for norm in ("none", "dim", "cosine"):
        assert float(modality_gram(s @ q_s, t @ q_t, norm)) == pytest.approx(float(modality_gram(s, t, norm)), rel=1e-9)


def test_zero_for_equal_relations_and_positive_otherwise():
    f = grid((2, 3, 4), 0.45)
    assert float(modality_gram(f, f.clone())) == 0.0
    assert float(modality_gram(f, 2 * f)) > 0.0
    # cosine: the scale of each modality embedding does not matter, only the angles between them
    assert float(modality_gram(f, 3 * f, normalize="cosine")) == pytest.approx(0.0, abs=1e-12)


def test_normalisations():
    f = grid((2, 3, 4), 0.45)
    raw = modality_gram_matrix(f)
    torch.testing.assert_close(modality_gram_matrix(f, "dim"), raw / 4)
    cos = modality_gram_matrix(f, "cosine")
    torch.testing.assert_close(torch.diagonal(cos, dim1=1, dim2=2), torch.ones(2, 3, dtype=torch.float64))
    assert cos.abs().max() <= 1 + 1e-12
    with pytest.raises(UserInputError, match="normalize must be one of none, dim, cosine"):
        modality_gram(f, f, normalize="frobenius")


def test_gradient_reaches_the_student_only_through_its_embeddings():
    s = grid((2, 3, 4), 0.45).requires_grad_()
    modality_gram(s, grid((2, 3, 6), 0.33), normalize="cosine").backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("student, teacher, message", [
    (torch.zeros(4, 8), torch.zeros(4, 2, 8), "student_emb must be per-modality embeddings .N, M, d.*method 'modality_gram'"),
    (torch.zeros(4, 1, 8), torch.zeros(4, 1, 8), "holds 1 modality; a relation needs at least 2"),
    (torch.zeros(4, 2, 8), torch.zeros(4, 3, 8), "2 modalities but teacher_emb has 3"),
    (torch.zeros(4, 2, 8), torch.zeros(5, 2, 8), "batch sizes must match"),
])
def test_bad_shapes_are_named(student, teacher, message):
    with pytest.raises(UserInputError, match=message):
        modality_gram(student, teacher)


def test_view_masks():
    m = view_masks([[0, 1, 2], [3, 4, 5]], 6)
    assert m.tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]
    with pytest.raises(UserInputError, match=r"views\[1\]: channel index 3 is out of range; the input has 3 channels"):
        view_masks([[0], [3]], 3)
    with pytest.raises(UserInputError, match=r"views\[1\]: channel 1 is already in another view"):
        view_masks([[0, 1], [1, 2]], 3)
    with pytest.raises(UserInputError, match="at least 2 views"):
        view_masks([[0, 1, 2]], 3)
    with pytest.raises(UserInputError, match=r"views\[0\]: a view must name at least one channel"):
        view_masks([[], [1]], 3)


def test_the_view_pass_trains_without_moving_batchnorm_statistics():
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU())
    net.train()
    full = net(torch.randn(8, 2, 16))  # the full window's pass, saved for backward, moves the statistics once
    before = [b.clone() for b in net.buffers()]
    with running_stats_kept(net):
        views = net(torch.randn(8, 2, 16) * 5 + 3)
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))
    assert all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    (full.sum() + views.pow(2).sum()).backward()  # no in-place write broke the first pass's backward
    assert net[0].weight.grad is not None


def test_smoke_data_gets_the_channels_the_views_name():
    assert ModalityGram.smoke_data_params({"views": [[0, 1, 2], [3, 4, 5]]}) == {"channels": 6}
    assert ModalityGram.smoke_data_params({"views": [[0], [1]]}) == {"channels": 3}  # the generator's minimum


RECIPE = {
    "name": "modality-gram-test",
    "data": {"name": "synthetic", "params": {"channels": 6, "n_subjects": 3, "windows_per_subject": 8, "n_classes": 3,
                                             "length": 32},
             "split": {"by": "auto", "val": 0.2, "test": 0.2}, "normalize": "per_channel"},
    "teacher": {"model": "cnn1d", "width": 8, "depth": 2, "train": {"epochs": 1, "batch_size": 8}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "modality_gram", "params": {"views": [[0, 1, 2], [3, 4, 5]]},
               "terms": [{"loss": "ce", "weight": 1.0},
                         {"loss": "modality_gram", "weight": 1.0, "normalize": "cosine"}]},
    "train": {"epochs": 1, "batch_size": 8},
    "seeds": [0],
    "engine": {"progress": False, "threads": 1},
}


def test_a_run_logs_the_modality_term(tmp_path):
    summary = edgedistill.run(RECIPE, out=tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "modality_gram" / "seed0" / "metrics.jsonl").read_text().splitlines()
    import json

    train = json.loads(log[0])["train"]
    assert train["modality_gram"] > 0 and math.isfinite(train["modality_gram"])
    method = [r for r in summary["rows"] if r["model"] == summary["deliverable"]]
    assert method and method[0]["metrics"]["acc"]["n"] == 1


@pytest.mark.parametrize("change, message", [
    ({"terms": [{"loss": "ce", "weight": 1.0}]}, "needs a modality_gram term"),
    ({"params": {"views": [[0, 1, 2], [3, 4, 9]]}}, r"views\[1\]: channel index 9 is out of range; the input has 6"),
    ({"name": "offline", "params": {}}, "student_emb must be per-modality embeddings"),
])
def test_recipe_mistakes_are_named(tmp_path, change, message):
    recipe = {**RECIPE, "method": {**RECIPE["method"], **change}}
    with pytest.raises(UserInputError, match=message):
        edgedistill.run(recipe, out=tmp_path / "run", progress=False)
