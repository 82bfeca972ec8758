"""Reference values for NST, FSP, CC, KD-SVD, ICKD, MLKD, LogitStd and DIST+ (issue 23, part A), from the formulas
in numpy float64.

Independent of the package (it imports only numpy and math): tests/test_losses_baselines_a.py rebuilds the same
inputs and compares. Run: ``python tests/reference/ref_baselines_a.py > tests/reference/ref_baselines_a_output.txt``.

Inputs: grid(shape, a, b) = sin(a * arange(prod(shape)) + b) reshaped (row-major); KD-SVD uses
rough(shape, a, b) = sin(a * arange(prod(shape))**1.5 + b), whose matrices have full rank. Values are printed with 12
decimals; the tests compare to 1e-10. Where a loss pools positions, the sizes chosen divide exactly, so adaptive
average pooling is a plain block mean here.
"""
from __future__ import annotations

import math

import numpy as np


def grid(shape, a, b=0.0):
    n = int(np.prod(shape))
    return np.sin(np.arange(n, dtype=np.float64) * a + b).reshape(shape)


def rough(shape, a, b=0.0):
    """sin(a * k^1.5 + b): full-rank matrices (a plain sin grid has rank 2, so its trailing singular vectors are arbitrary)."""
    n = int(np.prod(shape))
    return np.sin(np.arange(n, dtype=np.float64) ** 1.5 * a + b).reshape(shape)


def block_mean(x, size):
    """(N, C, L) -> (N, C, size) by averaging equal consecutive blocks (L divisible by size)."""
    n, c, length = x.shape
    return x.reshape(n, c, size, length // size).mean(axis=3)


def unit(x, axis=-1):
    norm = np.sqrt((x * x).sum(axis=axis, keepdims=True))
    return np.where(norm > 1e-12, x / np.maximum(norm, 1e-12), 0.0)


def softmax(z, t=1.0):
    z = z / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kl_mean(zt, zs, t):
    """mean_i KL(softmax(zt_i / t) || softmax(zs_i / t))."""
    pt, ps = softmax(zt, t), softmax(zs, t)
    return float((pt * (np.log(pt) - np.log(ps))).sum(axis=1).mean())


def show(name, value):
    print(f"{name} = {value:.12f}")


# ------------------------------------------------------------------ NST: MMD^2 with k(x, y) = (x . y)^2


def nst(fs, ft):
    n = fs.shape[0]
    s, t = unit(fs.reshape(n, fs.shape[1], -1)), unit(ft.reshape(n, ft.shape[1], -1))

    def kmean(a, b):
        vals = [(a[i][p] @ b[i][q]) ** 2 for i in range(n) for p in range(a.shape[1]) for q in range(b.shape[1])]
        return sum(vals) / len(vals)

    return kmean(t, t) + kmean(s, s) - 2 * kmean(s, t)


print("==== 1. NST")
fs1, ft1 = grid((2, 3, 8), 0.31), grid((2, 4, 4), 0.23, 0.4)
show("NST_1d_pooled", nst(block_mean(fs1, 4), ft1))  # the student (length 8) pooled to the teacher's 4
show("NST_2d", nst(grid((2, 3, 2, 3), 0.17), grid((2, 5, 2, 3), 0.29, 0.1)))


# ------------------------------------------------------------------ FSP: G = F1 F2^T / P per sample, MSE, summed


def fsp_matrix(a, b):
    n = a.shape[0]
    a, b = a.reshape(n, a.shape[1], -1), b.reshape(n, b.shape[1], -1)
    return np.einsum("ncp,ndp->ncd", a, b) / a.shape[2]


print("==== 2. FSP")
s_maps = [grid((2, 3, 8), 0.21), grid((2, 4, 4), 0.33, 0.2), grid((2, 2, 4), 0.41, 0.5)]
t_maps = [grid((2, 3, 4), 0.27, 0.3), grid((2, 4, 4), 0.19, 0.1), grid((2, 2, 2), 0.37, 0.7)]
total = 0.0
for k in range(2):
    a_s, b_s, a_t, b_t = s_maps[k], s_maps[k + 1], t_maps[k], t_maps[k + 1]
    # pool the larger of each network's pair to the smaller length
    size_s, size_t = min(a_s.shape[2], b_s.shape[2]), min(a_t.shape[2], b_t.shape[2])
    gs = fsp_matrix(block_mean(a_s, size_s), block_mean(b_s, size_s))
    gt = fsp_matrix(block_mean(a_t, size_t), block_mean(b_t, size_t))
    total += float(((gs - gt) ** 2).mean())
show("FSP_three_taps", total)


# ------------------------------------------------------------------ CC: exact Gaussian RBF vs its Taylor series


def cc_matrix(x, gamma, order):
    x = unit(x.reshape(x.shape[0], -1))
    sim = x @ x.T
    return math.exp(-2 * gamma) * sum((2 * gamma) ** p / math.factorial(p) * sim**p for p in range(order + 1))


print("==== 3. CC")
es, et = grid((5, 6), 0.57), grid((5, 9), 0.43, 0.1)
show("CC_gamma0.4_order2", float(((cc_matrix(es, 0.4, 2) - cc_matrix(et, 0.4, 2)) ** 2).mean()))
show("CC_gamma0.4_order3", float(((cc_matrix(es, 0.4, 3) - cc_matrix(et, 0.4, 3)) ** 2).mean()))
# The exact kernel exp(-gamma ||x_i - x_j||^2) on unit rows, for the series' convergence check.
ues, uet = unit(es), unit(et)
exact = lambda u: np.exp(-0.4 * ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1))  # noqa: E731
show("CC_gamma0.4_exact_kernel", float(((exact(ues) - exact(uet)) ** 2).mean()))


# ------------------------------------------------------------------ ICKD: row-normalised F F^T, sum / (N C)


def icc(f):
    f = f.reshape(f.shape[0], f.shape[1], -1)
    return unit(np.einsum("ncp,ndp->ncd", f, f))


print("==== 4. ICKD")
fs4, ft4 = grid((2, 4, 6), 0.45), grid((2, 4, 3), 0.33, 0.7)
fs4 = fs4.reshape(2, 4, 3, 2).mean(axis=3)  # pooled to the teacher's length 3
show("ICKD_1d", float(((icc(fs4) - icc(ft4)) ** 2).sum() / (2 * 4)))
show("ICKD_2d", float(((icc(grid((3, 3, 2, 2), 0.13)) - icc(grid((3, 3, 2, 2), 0.11, 0.2))) ** 2).sum() / (3 * 3)))


# ------------------------------------------------------------------ KD-SVD


def right_singular(f, k):
    x = np.transpose(f.reshape(f.shape[0], f.shape[1], -1), (0, 2, 1))  # (N, P, C)
    vs, svals = [], []
    for xi in x:
        # eigen-decomposition of X^T X: its eigenvectors are X's right singular vectors, eigenvalues sigma^2
        w, v = np.linalg.eigh(xi.T @ xi)
        order = np.argsort(w)[::-1][:k]
        v = v[:, order]
        v = v * np.where(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])] < 0, -1.0, 1.0)  # largest entry > 0
        sig = np.sqrt(np.maximum(w[order], 0.0))
        vs.append(v)
        svals.append(sig / np.linalg.norm(sig))
    return np.stack(vs), np.stack(svals)


def align(v_s, v_t):
    out = np.zeros_like(v_t)
    for i in range(v_s.shape[0]):
        cos = v_s[i].T @ v_t[i]
        for j in range(v_t.shape[2]):
            best = int(np.abs(cos[:, j]).argmax())
            out[i][:, j] = np.sign(cos[best, j]) * v_s[i][:, best]
    return out


def kdsvd(s_maps, t_maps, k):
    prev, total = None, 0.0
    for fs, ft in zip(s_maps, t_maps):
        v_t, sv_t = right_singular(ft, k)
        rank = min(ft.shape[1], ft.reshape(ft.shape[0], ft.shape[1], -1).shape[2], fs.reshape(fs.shape[0], fs.shape[1], -1).shape[2])
        v_s, _ = right_singular(fs, min(k + 3, rank))
        v_s = align(v_s, v_t) * sv_t[:, None, :]
        v_t = v_t * sv_t[:, None, :]
        if prev is not None:
            r_s = np.exp(-((v_s[:, :, None, :] - prev[0][:, None, :, :]) ** 2) / 8)
            r_t = np.exp(-((v_t[:, :, None, :] - prev[1][:, None, :, :]) ** 2) / 8)
            total += float(((r_s - r_t) ** 2).sum() / fs.shape[0])
        prev = (v_s, v_t)
    return total


print("==== 5. KD-SVD")
s5 = [rough((2, 5, 9), 0.71), rough((2, 4, 6), 0.53, 0.3)]
t5 = [rough((2, 5, 7), 0.67, 0.2), rough((2, 4, 8), 0.59, 0.9)]
show("KDSVD_k1", kdsvd(s5, t5, 1))
show("KDSVD_k2", kdsvd(s5, t5, 2))


# ------------------------------------------------------------------ MLKD, LogitStd, DIST+

ZS = np.array([[1.0, 2.0, 0.5, -1.0], [0.2, -0.3, 1.5, 0.0], [2.0, 0.1, -0.5, 0.3], [-1.0, 0.4, 0.2, 1.1]])
ZT = np.array([[2.0, 1.0, 0.0, -2.0], [0.0, 0.5, 2.5, -1.0], [1.5, 0.5, 0.5, 0.0], [-0.5, 0.0, 1.0, 2.0]])


def mlkd(zs, zt, temps, w=(1.0, 1.0, 1.0)):
    total = 0.0
    for t in temps:
        ps, pt = softmax(zs, t), softmax(zt, t)
        inst = t * t * kl_mean(zt, zs, t)
        batch = float(((pt @ pt.T - ps @ ps.T) ** 2).sum() / zs.shape[0])
        klass = float(((pt.T @ pt - ps.T @ ps) ** 2).sum() / zs.shape[1])
        total += w[0] * inst + w[1] * batch + w[2] * klass
    return total


print("==== 6. MLKD")
show("MLKD_T23456", mlkd(ZS, ZT, (2, 3, 4, 5, 6)))
show("MLKD_T4_instance_only", mlkd(ZS, ZT, (4,), (1.0, 0.0, 0.0)))
show("MLKD_T4_batch_only", mlkd(ZS, ZT, (4,), (0.0, 1.0, 0.0)))
show("MLKD_T4_class_only", mlkd(ZS, ZT, (4,), (0.0, 0.0, 1.0)))


def zscore(z):
    c = z - z.mean(axis=1, keepdims=True)
    return c / np.sqrt((c * c).sum(axis=1, keepdims=True) / (z.shape[1] - 1))


print("==== 7. LogitStd")
show("LogitStd_T2", 4 * kl_mean(zscore(ZT), zscore(ZS), 2.0))
show("LogitStd_T3", 9 * kl_mean(zscore(ZT), zscore(ZS), 3.0))


def pearson_distance(a, b):
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return 1 - (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def dist(zs, zt, beta, gamma, tau):
    ys, yt = softmax(zs, tau), softmax(zt, tau)
    return tau * tau * (beta * pearson_distance(ys, yt).mean() + gamma * pearson_distance(ys.T, yt.T).mean())


print("==== 8. DIST+ (our build: DIST on logits + DIST on raw feature rows)")
fs8, ft8 = grid((4, 3, 4), 0.39), grid((4, 3, 2), 0.47, 0.6)
fs8 = fs8.reshape(4, 3, 2, 2).mean(axis=3)  # pooled to the teacher's length 2
rows_s, rows_t = np.transpose(fs8, (0, 2, 1)).reshape(-1, 3), np.transpose(ft8, (0, 2, 1)).reshape(-1, 3)
feat = pearson_distance(rows_s, rows_t).mean() + pearson_distance(rows_s.T, rows_t.T).mean()
show("DISTplus_feature_part", float(feat))
show("DISTplus_T1_featweight1", dist(ZS, ZT, 1.0, 1.0, 1.0) + float(feat))
show("DISTplus_T4_featweight0.5", dist(ZS, ZT, 1.0, 1.0, 4.0) + 0.5 * float(feat))
