"""Reference values for VID, OFD and ReviewKD (issue 23, part C), from the formulas in numpy float64.

Independent of the package (it imports only numpy and math): the tests in tests/test_losses_baselines_c.py rebuild the
same inputs and weights and compare. Run: ``python tests/reference/ref_baselines_c.py > tests/reference/ref_baselines_c_output.txt``.

Inputs: grid(shape, a, b) = sin(a * arange(prod(shape)) + b) reshaped (row-major). The trainable modules' weights are
filled in their parameter order with WEIGHT(i, shape) = 0.5 * grid(shape, 0.1 + 0.07 * i, 0.3 * i); BatchNorm layers
are in evaluation mode with running mean 0 and running variance 1, so BN(x) = gamma * x + beta per channel.
"""
from __future__ import annotations

import math

import numpy as np


def grid(shape, a, b=0.0):
    n = int(np.prod(shape))
    return np.sin(np.arange(n, dtype=np.float64) * a + b).reshape(shape)


def weight(i, shape):
    return 0.5 * grid(shape, 0.1 + 0.07 * i, 0.3 * i)


def adaptive_pool(x, size):
    """Adaptive average pooling over the trailing len(size) axes: bin i spans [floor(i L / l), ceil((i + 1) L / l))."""
    for k, out in enumerate(size):
        axis = x.ndim - len(size) + k
        length = x.shape[axis]
        parts = [np.take(x, range(math.floor(i * length / out), math.ceil((i + 1) * length / out)), axis=axis)
                 .mean(axis=axis, keepdims=True) for i in range(out)]
        x = np.concatenate(parts, axis=axis)
    return x


def pointwise(x, w):
    """1x1 convolution without bias: w (C_out, C_in[, 1[, 1]]) applied at every position of x (N, C_in, ...)."""
    w2 = w.reshape(w.shape[0], w.shape[1])
    return np.einsum("oc,nc...->no...", w2, x)


def bn_eval(x, gamma, beta):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * gamma.reshape(shape) + beta.reshape(shape)


def conv3(x, w):
    """3-wide (1-D) or 3x3 (2-D) convolution, stride 1, zero padding 1, no bias (cross-correlation, as torch)."""
    if x.ndim == 3:
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
        length = x.shape[2]
        return sum(np.einsum("oc,ncl->nol", w[:, :, k], xp[:, :, k:k + length]) for k in range(3))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    return sum(np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i:i + h, j:j + wd]) for i in range(3) for j in range(3))


def nearest(x, size):
    """torch's 'nearest' resize of the trailing axes: source index floor(i * in / out)."""
    for k, out in enumerate(size):
        axis = x.ndim - len(size) + k
        length = x.shape[axis]
        x = np.take(x, [min(math.floor(i * length / out), length - 1) for i in range(out)], axis=axis)
    return x


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def show(name, value):
    print(f"{name} = {value:.15g}")


# ---------------------------------------------------------------- VID
def vid_nll(mu, t, var):
    v = var.reshape((1, -1) + (1,) * (t.ndim - 2))
    return float(np.mean(0.5 * ((t - mu) ** 2 / v + np.log(v))))


def vid_module(s, t, c_mid, alpha):
    """Three pointwise layers with ReLU between, weights 0..2, the per-channel variance softplus(alpha) + 1e-5."""
    if s.shape[2:] != t.shape[2:]:
        size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:]))
        s, t = adaptive_pool(s, size), adaptive_pool(t, size)
    c_s, c_t = s.shape[1], t.shape[1]
    h = np.maximum(pointwise(s, weight(0, (c_mid, c_s))), 0)
    h = np.maximum(pointwise(h, weight(1, (c_mid, c_mid))), 0)
    mu = pointwise(h, weight(2, (c_t, c_mid)))
    return vid_nll(mu, t, softplus(alpha) + 1e-5)


# ---------------------------------------------------------------- OFD
def gaussian_margin(mean, std):
    a = -mean / std
    cdf = 0.5 * math.erfc(-a / math.sqrt(2.0))
    if cdf <= 1e-3:
        return -3.0 * std
    return mean - std * math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi) / cdf


def ofd(s, t, margin):
    target = np.maximum(t, margin.reshape((1, -1) + (1,) * (t.ndim - 2)))
    keep = (s > target) | (target > 0)
    return float(((s - target) ** 2 * keep).sum() / s.shape[0])


def empirical_margin(t):
    flat = np.moveaxis(t, 1, 0).reshape(t.shape[1], -1)
    return np.array([row[row < 0].mean() if (row < 0).any() else 0.0 for row in flat])


def ofd_module(s, t):
    """Connector: pointwise weight 0, BN gamma weight 1, beta weight 2; margin estimated from t itself."""
    c_s, c_t = s.shape[1], t.shape[1]
    z = bn_eval(pointwise(s, weight(0, (c_t, c_s))), weight(1, (c_t,)), weight(2, (c_t,)))
    return ofd(z, t, empirical_margin(t))


# ---------------------------------------------------------------- ReviewKD
def hcl(fs, ft, levels=(4, 2, 1)):
    total = 0.0
    for s, t in zip(fs, ft):
        loss, w, norm = np.mean((s - t) ** 2), 1.0, 1.0
        for level in levels:
            size = tuple(min(level, d) for d in s.shape[2:])
            if size == s.shape[2:]:
                continue
            w /= 2.0
            loss += w * np.mean((adaptive_pool(s, size) - adaptive_pool(t, size)) ** 2)
            norm += w
        total += loss / norm
    return float(total)


def reviewkd(student, teacher_sizes, c_t, mid):
    """ABFs in parameter order stage 0, 1, ...: conv1 weight, bn1 gamma, beta, conv2 weight, bn2 gamma, beta, and for
    every stage but the deepest the gate conv weight and bias. Stages run deepest first."""
    k, i, params = len(student), 0, []
    for stage in range(k):
        dims = student[stage].ndim - 2
        c_s = student[stage].shape[1]
        shapes = [(mid, c_s) + (1,) * dims, (mid,), (mid,), (c_t[stage], mid) + (3,) * dims, (c_t[stage],), (c_t[stage],)]
        if stage < k - 1:
            shapes += [(2, 2 * mid) + (1,) * dims, (2,)]
        p = []
        for shape in shapes:
            p.append(weight(i, shape))
            i += 1
        params.append(p)
    out, deeper = [None] * k, None
    for stage in reversed(range(k)):
        p = params[stage]
        x = bn_eval(pointwise(student[stage], p[0]), p[1], p[2])
        if stage < k - 1:
            y = nearest(deeper, x.shape[2:])
            z = np.concatenate([x, y], axis=1)
            gw = p[6].reshape(2, -1)
            g = sigmoid(np.einsum("oc,nc...->no...", gw, z) + p[7].reshape((1, 2) + (1,) * (x.ndim - 2)))
            x = x * g[:, :1] + y * g[:, 1:]
        if x.shape[2:] != teacher_sizes[stage]:
            x = nearest(x, teacher_sizes[stage])
        deeper = x
        out[stage] = bn_eval(conv3(x, p[3]), p[4], p[5])
    return out


def main():
    # VID
    mu, t, var = grid((2, 3, 4), 0.31), grid((2, 3, 4), 0.23, 0.5), np.array([0.5, 1.0, 2.5])
    show("VID_nll_1d", vid_nll(mu, t, var))
    show("VID_module_1d", vid_module(grid((2, 3, 5), 0.17), grid((2, 4, 5), 0.29, 0.4), 4, grid((4,), 0.9, 0.1)))
    show("VID_module_2d_pooled", vid_module(grid((2, 2, 4, 4), 0.19), grid((2, 3, 2, 2), 0.37, 0.2), 3,
                                            grid((3,), 0.8, -0.3)))
    # OFD
    for mean, std in ((0.0, 1.0), (-1.0, 2.0), (1.5, 0.5), (3.0, 0.5)):
        show(f"OFD_gaussian_margin_{mean:g}_{std:g}", gaussian_margin(mean, std))
    s, t = 1.3 * grid((2, 3, 4), 0.41, 0.2), 1.1 * grid((2, 3, 4), 0.27, 1.0)
    show("OFD_partial_l2_1d", ofd(s, t, np.array([-0.2, -0.5, -1.0])))
    t2 = grid((2, 3, 2, 3), 0.53, 0.1)
    show("OFD_empirical_margin_c0", empirical_margin(t2)[0])
    show("OFD_empirical_margin_c2", empirical_margin(t2)[2])
    show("OFD_module_2d", ofd_module(grid((2, 4, 2, 3), 0.21, 0.3), t2))
    # ReviewKD: HCL alone, then the whole module (2-D with an embedding, and 1-D)
    fs = [grid((2, 2, 8, 8), 0.11), grid((2, 3, 4, 4), 0.13, 0.2), grid((2, 2, 1, 1), 0.7)]
    ft = [grid((2, 2, 8, 8), 0.17, 0.4), grid((2, 3, 4, 4), 0.07, 0.1), grid((2, 2, 1, 1), 0.5, 0.3)]
    show("HCL_2d_three_stages", hcl(fs, ft))
    show("HCL_1d_length6", hcl([grid((2, 3, 6), 0.3)], [grid((2, 3, 6), 0.2, 0.5)]))
    student = [grid((2, 2, 4, 4), 0.15), grid((2, 3, 2, 2), 0.21, 0.3), grid((2, 3), 0.6, 0.2).reshape(2, 3, 1, 1)]
    teacher = [grid((2, 3, 8, 8), 0.12, 0.1), grid((2, 4, 4, 4), 0.18, 0.2), grid((2, 4), 0.5, 0.7).reshape(2, 4, 1, 1)]
    fused = reviewkd(student, [(8, 8), (4, 4), (1, 1)], [3, 4, 4], 3)
    show("ReviewKD_module_2d", hcl(fused, teacher))
    student1 = [grid((2, 2, 6), 0.25), grid((2, 3, 3), 0.33, 0.1)]
    teacher1 = [grid((2, 2, 6), 0.14, 0.6), grid((2, 3, 3), 0.22, 0.9)]
    fused1 = reviewkd(student1, [(6,), (3,)], [2, 3], 2)
    show("ReviewKD_module_1d", hcl(fused1, teacher1))


if __name__ == "__main__":
    main()
