"""Reference values for FT and AB (issue 23, part B), from the formulas in numpy float64.

Independent of the package (it imports only numpy and math): tests/test_losses_baselines_b.py rebuilds the same inputs
and weights and compares. Run: ``python tests/reference/ref_baselines_b.py > tests/reference/ref_baselines_b_output.txt``.

Inputs: grid(shape, a, b) = sin(a * arange(prod(shape)) + b) reshaped (row-major). The trainable modules' weights are
filled in their parameter order with WEIGHT(i, shape) = 0.5 * grid(shape, 0.1 + 0.07 * i, 0.3 * i); BatchNorm layers
are in evaluation mode with running mean 0 and running variance 1, so BN(x) = gamma * x / sqrt(1 + 1e-5) + beta per
channel (torch's eps included).

FT (Kim et al. 2018): factor loss = mean over batch and entries of |u_s - u_t|^p, u = flattened factor / its L2 norm;
the paraphraser's encoder and the translator are three (conv3 + bias, BN, LeakyReLU 0.1) blocks; the decoder three
transposed ones; the reconstruction loss is the mean squared error between the teacher's map and its reconstruction.
AB (Heo et al. 2019): per element (s - m)^2 where the teacher is active (t > 0) and s < m, (s + m)^2 where it is not
and s > -m, summed, divided by the batch size; the module's s is a 1x1 conv (no bias) + BN of the student's map,
after the larger map is adaptive-average-pooled to the smaller length.
"""
from __future__ import annotations

import math

import numpy as np

EPS_BN = 1e-5


def grid(shape, a, b=0.0):
    n = int(np.prod(shape))
    return np.sin(np.arange(n, dtype=np.float64) * a + b).reshape(shape)


def weight(i, shape):
    return 0.5 * grid(shape, 0.1 + 0.07 * i, 0.3 * i)


def show(name, value):
    print(f"{name} = {value:.15g}")


def bn_eval(x, gamma, beta):
    """torch's BatchNorm in evaluation mode with running mean 0 and variance 1: gamma * x / sqrt(1 + eps) + beta."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * gamma.reshape(shape) / math.sqrt(1.0 + EPS_BN) + beta.reshape(shape)


def conv3(x, w, bias):
    """3-wide (1-D) or 3x3 (2-D) cross-correlation, stride 1, zero padding 1, plus bias."""
    if x.ndim == 3:
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
        length = x.shape[2]
        out = sum(np.einsum("oc,ncl->nol", w[:, :, k], xp[:, :, k:k + length]) for k in range(3))
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        h, wd = x.shape[2:]
        out = sum(np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i:i + h, j:j + wd]) for i in range(3) for j in range(3))
    return out + bias.reshape((1, -1) + (1,) * (x.ndim - 2))


def conv3_transposed(x, w, bias):
    """Transposed convolution, kernel 3, stride 1, padding 1: w is (C_in, C_out, 3[, 3]); equal to a convolution with
    the kernel flipped and its in/out axes swapped."""
    flipped = np.flip(np.swapaxes(w, 0, 1), axis=tuple(range(2, w.ndim)))
    return conv3(x, flipped, bias)


def leaky(x):
    return np.where(x >= 0, x, 0.1 * x)


def adaptive_pool(x, size):
    """Adaptive average pooling over the trailing len(size) axes: bin i spans [floor(i L / l), ceil((i + 1) L / l))."""
    for k, out in enumerate(size):
        axis = x.ndim - len(size) + k
        length = x.shape[axis]
        parts = [np.take(x, range(math.floor(i * length / out), math.ceil((i + 1) * length / out)), axis=axis)
                 .mean(axis=axis, keepdims=True) for i in range(out)]
        x = np.concatenate(parts, axis=axis)
    return x


# ---------------------------------------------------------------- FT


def ft_factor(s, t, p):
    n = s.shape[0]
    us = s.reshape(n, -1) / np.linalg.norm(s.reshape(n, -1), axis=1, keepdims=True)
    ut = t.reshape(n, -1) / np.linalg.norm(t.reshape(n, -1), axis=1, keepdims=True)
    return float(np.mean(np.abs(us - ut) ** p))


s1, t1 = grid((3, 4, 5), 0.7, 0.3), grid((3, 4, 5), 1.3, -0.2)
show("FT_factor_p1_1d", ft_factor(s1, t1, 1))
show("FT_factor_p2_1d", ft_factor(s1, t1, 2))
s2, t2 = grid((2, 3, 4, 5), 0.45, 0.1), grid((2, 3, 4, 5), 0.9, 0.5)
show("FT_factor_p1_2d", ft_factor(s2, t2, 1))
show("FT_factor_scaled_student", ft_factor(3.5 * s1, t1, 1))  # the normalisation: equal to FT_factor_p1_1d


def blocks(x, params, shapes, transposed=False):
    """Three (conv + bias, BN, LeakyReLU) blocks; params is the running parameter index (consumed in order)."""
    for cin, cout in shapes:
        k = (3,) * (x.ndim - 2)
        w_shape = (cin, cout, *k) if transposed else (cout, cin, *k)
        w, b = weight(params[0], w_shape), weight(params[0] + 1, (cout,))
        gamma, beta = weight(params[0] + 2, (cout,)), weight(params[0] + 3, (cout,))
        params[0] += 4
        x = (conv3_transposed if transposed else conv3)(x, w, b)
        x = leaky(bn_eval(x, gamma, beta))
    return x


def ft_module(student, teacher):
    """The FT module's two objectives with its parameters numbered in torch's order: paraphraser (encoder, decoder),
    then translator. Factor rate 0.5."""
    cs, ct = student.shape[1], teacher.shape[1]
    k = max(1, round(0.5 * ct))
    idx = [0]
    enc = [(ct, ct), (ct, k), (k, k)]
    factor_t = blocks(teacher, idx, enc)
    rebuilt = blocks(factor_t, idx, [(k, k), (k, ct), (ct, ct)], transposed=True)
    factor_s = blocks(student, idx, [(cs, cs), (cs, k), (k, k)])
    size = tuple(min(a, b) for a, b in zip(factor_s.shape[2:], factor_t.shape[2:]))
    factor_s, factor_t = adaptive_pool(factor_s, size), adaptive_pool(factor_t, size)
    return ft_factor(factor_s, factor_t, 1), float(np.mean((rebuilt - teacher) ** 2))


factor, rec = ft_module(grid((2, 3, 7), 0.5, 0.2), grid((2, 4, 5), 0.8, -0.4))
show("FT_module_factor_1d", factor)
show("FT_module_reconstruction_1d", rec)
factor, rec = ft_module(grid((2, 2, 3, 4), 0.35, 0.6), grid((2, 4, 3, 4), 0.6, 0.0))
show("FT_module_factor_2d", factor)
show("FT_module_reconstruction_2d", rec)


# ---------------------------------------------------------------- AB


def ab(s, t, margin):
    on = t > 0
    hinge = np.where(on, np.maximum(margin - s, 0.0), np.maximum(margin + s, 0.0))
    return float((hinge ** 2).sum() / s.shape[0])


sa, ta = 2.0 * grid((3, 4, 6), 0.55, 0.1), grid((3, 4, 6), 1.1, 0.7)
show("AB_margin1_1d", ab(sa, ta, 1.0))
show("AB_margin0.5_1d", ab(sa, ta, 0.5))
show("AB_margin1_2d", ab(2.0 * grid((2, 3, 3, 4), 0.4, 0.2), grid((2, 3, 3, 4), 0.75, -0.3), 1.0))
# Far on the right side of every boundary: zero.
show("AB_separated", ab(np.where(ta > 0, 5.0, -5.0), ta, 1.0))


def ab_module(student, teacher, margin):
    """1x1 conv (no bias), BN (eval), after pooling the longer map to the shorter length; parameters in torch's order."""
    cs, ct = student.shape[1], teacher.shape[1]
    size = tuple(min(a, b) for a, b in zip(student.shape[2:], teacher.shape[2:]))
    student, teacher = adaptive_pool(student, size), adaptive_pool(teacher, size)
    w = weight(0, (ct, cs))
    s = np.einsum("oc,nc...->no...", w, student)
    s = bn_eval(s, weight(1, (ct,)), weight(2, (ct,)))
    return ab(s, teacher, margin)


show("AB_module_1d", ab_module(grid((2, 3, 8), 0.3, 0.4), grid((2, 5, 6), 0.9, 0.1), 1.0))
show("AB_module_2d", ab_module(grid((2, 3, 4, 4), 0.3, 0.4), grid((2, 5, 2, 4), 0.9, 0.1), 0.5))
