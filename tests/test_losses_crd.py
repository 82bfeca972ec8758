"""CRD: golden values from tests/reference/ref_others.py section 9 (printed in ref_others_output.txt), which follows
the official code (https://github.com/HobbitLong/RepDistiller, crd/), and module behaviour."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses.contrastive import CRD, crd_normaliser, crd_scores, memory_update, nce_loss
from edgedistill.registry import LOSSES


def grid(shape, a=0.37, b=0.0):
    return torch.sin(torch.arange(math.prod(shape), dtype=torch.float64) * a + b).reshape(shape)


# The reference's inputs: heads' outputs v_s, v_t, the two banks, 10 rows, K = 3, tau = 0.07.
V_S, V_T = F.normalize(grid((2, 4), 0.41), dim=1), F.normalize(grid((2, 4), 0.23, 0.5), dim=1)
MEM_S, MEM_T = F.normalize(grid((10, 4), 0.17, 0.3), dim=1), F.normalize(grid((10, 4), 0.19, 0.9), dim=1)
IDX = torch.tensor([[0, 3, 5, 7], [1, 2, 8, 9]])
N_DATA, TAU = 10, 0.07


def reference_scores():
    raw_s = crd_scores(V_S, MEM_T, IDX, TAU)  # student anchor vs teacher bank
    raw_t = crd_scores(V_T, MEM_S, IDX, TAU)  # teacher anchor vs student bank
    z_s, z_t = crd_normaliser(raw_s, N_DATA), crd_normaliser(raw_t, N_DATA)
    return crd_scores(V_S, MEM_T, IDX, TAU, z_s), crd_scores(V_T, MEM_S, IDX, TAU, z_t)


def test_golden_scores_loss_and_memory_update():
    out_s, out_t = reference_scores()
    expected_s = torch.tensor([[0.041634, 0.0, 0.0, 0.213067], [0.141035, 0.249687, 0.039868, 0.114710]], dtype=torch.float64)
    expected_t = torch.tensor([[0.241133, 0.034576, 0.0, 0.0], [0.226560, 0.249716, 0.0, 0.048015]], dtype=torch.float64)
    assert torch.allclose(out_s, expected_s, atol=1e-6, rtol=0)  # CRD_out_s
    assert torch.allclose(out_t, expected_t, atol=1e-6, rtol=0)  # CRD_out_t
    assert float(nce_loss(out_s, N_DATA) + nce_loss(out_t, N_DATA)) == pytest.approx(3.675270, abs=1e-6)  # CRD_loss
    row0 = memory_update(MEM_S, torch.tensor([0]), V_S[:1], 0.5)
    expected_row = torch.tensor([0.137988, 0.371793, 0.572927, 0.717275], dtype=torch.float64)
    assert torch.allclose(row0[0], expected_row, atol=1e-6, rtol=0)  # CRD_mem_update_row0


def test_nce_loss_properties_and_gradcheck():
    out_s, _ = reference_scores()
    base = float(nce_loss(out_s, N_DATA))
    higher = out_s.clone()
    higher[:, 0] *= 2.0
    assert float(nce_loss(higher, N_DATA)) < base  # a stronger positive with fixed negatives lowers the loss
    perfect = torch.tensor([[1e12, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(nce_loss(perfect, N_DATA)) == pytest.approx(0.0, abs=1e-5)  # up to the code's 1e-7 guards
    anchor = V_S.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: nce_loss(crd_scores(a, MEM_T, IDX, 0.5, 2.0), N_DATA), (anchor,))


def make(n=30, classes=3, seed=0, **kw):
    torch.manual_seed(seed)
    labels = torch.arange(n) % classes
    return CRD((6,), (2, 4), n, labels, **{"feat_dim": 8, "nce_k": 5, **kw})


def batch(seed=1, n=30):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 6, generator=g), torch.randn(4, 2, 4, generator=g), torch.randperm(n, generator=g)[:4]


def test_registered_and_trains_both_heads_but_not_the_banks():
    assert LOSSES.get("crd") is CRD
    crd = make()
    s, t, index = batch()
    before = crd.memory_s.clone()
    loss = crd(s.requires_grad_(True), t, index)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert crd.embed_s.weight.grad.abs().sum() > 0 and crd.embed_t.weight.grad.abs().sum() > 0
    assert torch.isfinite(s.grad).all()
    changed = (crd.memory_s != before).any(dim=1)
    assert changed.nonzero().flatten().sort().values.tolist() == index.sort().values.tolist()
    assert torch.allclose(crd.memory_s[index].norm(dim=1), torch.ones(4))  # updated rows are unit vectors
    assert {"memory_s", "memory_t", "z_s", "z_t", "rng_state"} <= set(crd.state_dict())


def test_normalisers_are_set_once():
    crd = make()
    crd(*batch(1))
    z = (float(crd.z_s), float(crd.z_t))
    assert z[0] > 0 and z[1] > 0
    crd(*batch(2))
    assert (float(crd.z_s), float(crd.z_t)) == z


def test_eval_mode_changes_no_state():
    crd = make()
    crd.eval()
    before = {name: b.clone() for name, b in crd.named_buffers()}
    first = crd(*batch(1))
    assert torch.isfinite(first)
    assert all(torch.equal(b, before[name]) for name, b in crd.named_buffers())
    assert torch.equal(crd(*batch(1)), first)  # same negatives, same Z, same banks


def test_negatives_exact_mode_other_classes_without_replacement():
    crd = make(n=30, classes=3, nce_k=12)  # other-class pool: 20 rows >= K, so no repeats
    index = torch.tensor([0, 4, 8, 29])
    idx = crd.sample_indices(index)
    assert idx.shape == (4, 13) and idx[:, 0].tolist() == index.tolist()
    labels = crd.train_labels
    assert (labels[idx[:, 1:]] != labels[index][:, None]).all()
    assert all(len(set(row.tolist())) == 13 for row in idx)


def test_negatives_with_replacement_only_when_the_pool_is_small():
    crd = make(n=30, classes=3, nce_k=25)  # K = 25 > the 20 other-class rows: drawn with replacement
    idx = crd.sample_indices(torch.tensor([0, 1]))
    labels = crd.train_labels
    assert idx.shape == (2, 26) and (labels[idx[:, 1:]] != labels[idx[:, :1]]).all()


def test_negatives_without_labels_exclude_the_anchor_and_k_is_capped():
    torch.manual_seed(0)
    crd = CRD((6,), (8,), 12, None, feat_dim=8)  # default nce_k = 16384 -> K = n_data - 1 = 11
    assert crd.k == 11
    idx = crd.sample_indices(torch.tensor([0, 5, 11]))
    for row in idx:
        assert sorted(row[1:].tolist()) == [r for r in range(12) if r != int(row[0])]


def test_reproducible_from_the_global_seed_and_across_resume():
    a, b = make(seed=3), make(seed=3)
    assert torch.equal(a(*batch(1)), b(*batch(1)))
    a2 = a(*batch(2))
    # a fresh module built under another seed, loaded from a's checkpoint after step 1, continues identically
    resumed = make(seed=99)
    resumed.load_state_dict(b.state_dict())
    assert torch.equal(resumed(*batch(2)), a2)
    assert torch.equal(copy.deepcopy(a).sample_indices(torch.tensor([1])), a.sample_indices(torch.tensor([1])))


def test_float64_module_and_gradcheck_through_the_heads():
    crd = make().double()
    s, t, index = batch()
    crd(s.double(), t.double(), index)  # sets Z, fills the banks
    buffers = {name: b.clone() for name, b in crd.named_buffers()}

    def f(x):
        for name, b in crd.named_buffers():  # same negatives and banks on every evaluation
            b.copy_(buffers[name])
        return crd(x, t.double(), index)

    assert torch.autograd.gradcheck(f, (s.double().requires_grad_(True),))


def test_errors_name_the_problem():
    crd = make()
    s, t, index = batch()
    with pytest.raises(UserInputError, match="student_emb has shape \\(4, 5\\); expected \\(N, 6\\)"):
        crd(s[:, :5], t, index)
    with pytest.raises(UserInputError, match="index must hold integer dataset rows in \\[0, 30\\)"):
        crd(s, t, torch.tensor([0, 1, 2, 30]))
    with pytest.raises(UserInputError, match="expected the same N"):
        crd(s, t[:3], index)
    with pytest.raises(UserInputError, match="student_emb is torch.float64 but the CRD module is torch.float32"):
        crd(s.double(), t, index)
    with pytest.raises(UserInputError, match="single class"):
        CRD((6,), (8,), 5, torch.zeros(5, dtype=torch.long))
    with pytest.raises(UserInputError, match="train_labels must be 5 integer labels"):
        CRD((6,), (8,), 5, torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserInputError, match="nce_t must be > 0"):
        CRD((6,), (8,), 5, nce_t=0.0)
