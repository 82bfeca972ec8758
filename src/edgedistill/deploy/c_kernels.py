"""The C99 kernels ``student.c`` is built from, one per layer kind and precision (only the used ones are emitted,
so ``-Wall -Werror`` sees no unused function).

Layout: a map is ``channels x length``, channel-major (``x[c * length + t]``), the order of a contiguous PyTorch
``(C, L)`` tensor, so ``Flatten`` costs nothing. Float kernels accumulate in ``float``. Int8 kernels read int8
activations with a per-tensor zero point, multiply by int8 weights into an ``int32_t`` accumulator (bias already
at the accumulator's scale) and requantise with a per-channel fixed-point multiplier: ``y = zp_out +
round_half_up(acc * mult / 2^shift)``, computed in ``int64_t`` (``mult`` in [2^30, 2^31), so ``acc * mult`` fits),
then clamped to [-128, 127] (to [zp_out, 127] with a fused ReLU). Right shifts of negative values are assumed to
be arithmetic, as on every compiler for Cortex-M (GCC, Clang, Arm Compiler, IAR).
"""
from __future__ import annotations

CONV_F32 = r"""
static void conv_f32(const float *x, float *y, const float *w, const float *b, int cin, int lin, int cout,
                     int lout, int k, int stride, int pad, int dil, int groups, int relu)
{
    const int cin_g = cin / groups, cout_g = cout / groups;
    int o, t, i, j;
    for (o = 0; o < cout; ++o) {
        const float *wo = w + (long)o * cin_g * k;
        const float *xg = x + (long)(o / cout_g) * cin_g * lin;
        for (t = 0; t < lout; ++t) {
            const int start = t * stride - pad;
            float acc = b[o];
            for (i = 0; i < cin_g; ++i) {
                const float *xi = xg + (long)i * lin;
                const float *wi = wo + (long)i * k;
                for (j = 0; j < k; ++j) {
                    const int p = start + j * dil;
                    if (p >= 0 && p < lin) acc += wi[j] * xi[p];
                }
            }
            y[(long)o * lout + t] = (relu && acc < 0.0f) ? 0.0f : acc;
        }
    }
}
"""

REQUANTIZE_Q8 = r"""
static int8_t requantize(int32_t acc, int32_t mult, int shift, int32_t zp_out, int32_t lo)
{
    int64_t v = ((int64_t)acc * mult + ((int64_t)1 << (shift - 1))) >> shift;
    v += zp_out;
    if (v < lo) v = lo;
    if (v > 127) v = 127;
    return (int8_t)v;
}
"""

CONV_Q8 = r"""
/* yf != NULL: write float outputs acc * deq[o] (the last layer: logits keep the accumulator's precision). */
static void conv_q8(const int8_t *x, int8_t *y, float *yf, const int8_t *w, const int32_t *b, const int32_t *mult,
                    const int8_t *shift, const float *deq, int cin, int lin, int cout, int lout, int k, int stride,
                    int pad, int dil, int groups, int32_t zp_in, int32_t zp_out, int relu)
{
    const int cin_g = cin / groups, cout_g = cout / groups;
    const int32_t lo = relu ? zp_out : -128;
    int o, t, i, j;
    for (o = 0; o < cout; ++o) {
        const int8_t *wo = w + (long)o * cin_g * k;
        const int8_t *xg = x + (long)(o / cout_g) * cin_g * lin;
        for (t = 0; t < lout; ++t) {
            const int start = t * stride - pad;
            int32_t acc = b[o];
            for (i = 0; i < cin_g; ++i) {
                const int8_t *xi = xg + (long)i * lin;
                const int8_t *wi = wo + (long)i * k;
                for (j = 0; j < k; ++j) {
                    const int p = start + j * dil;
                    if (p >= 0 && p < lin) acc += (int32_t)wi[j] * ((int32_t)xi[p] - zp_in);
                }
            }
            if (yf) {
                const float v = (float)acc * deq[o];
                yf[(long)o * lout + t] = (relu && v < 0.0f) ? 0.0f : v;
            } else {
                y[(long)o * lout + t] = requantize(acc, mult[o], shift[o], zp_out, lo);
            }
        }
    }
}
"""

# Max pooling and adaptive max pooling are the same code for both precisions: the int8 map is monotone in
# the real value, so the largest code is the code of the largest value.
MAXPOOL = r"""
static void maxpool_{T}(const {C} *x, {C} *y, int ch, int lin, int lout, int k, int stride, int pad, int dil)
{
    int c, t, j;
    for (c = 0; c < ch; ++c) {
        for (t = 0; t < lout; ++t) {
            const int start = t * stride - pad;
            int found = 0;
            {C} m = 0;
            for (j = 0; j < k; ++j) {
                const int p = start + j * dil;
                if (p >= 0 && p < lin && (!found || x[(long)c * lin + p] > m)) {
                    m = x[(long)c * lin + p];
                    found = 1;
                }
            }
            y[(long)c * lout + t] = m;
        }
    }
}
"""

ADAPTIVE_MAX = r"""
static void adaptive_max_{T}(const {C} *x, {C} *y, int ch, int lin, int lout)
{
    int c, t, p;
    for (c = 0; c < ch; ++c) {
        for (t = 0; t < lout; ++t) {
            const int s = (t * lin) / lout, e = ((t + 1) * lin + lout - 1) / lout;
            {C} m = x[(long)c * lin + s];
            for (p = s + 1; p < e; ++p)
                if (x[(long)c * lin + p] > m) m = x[(long)c * lin + p];
            y[(long)c * lout + t] = m;
        }
    }
}
"""

# PyTorch's avg_pool: the divisor counts the padded positions inside [start, start + k) clipped to the padded
# input when count_include_pad, else only the real positions.
AVGPOOL_F32 = r"""
static void avgpool_f32(const float *x, float *y, int ch, int lin, int lout, int k, int stride, int pad,
                        int include_pad)
{
    int c, t, p;
    for (c = 0; c < ch; ++c) {
        for (t = 0; t < lout; ++t) {
            int s = t * stride - pad, e = s + k;
            int div;
            float acc = 0.0f;
            if (e > lin + pad) e = lin + pad;
            div = e - s;
            if (s < 0) s = 0;
            if (e > lin) e = lin;
            if (!include_pad) div = e - s;
            for (p = s; p < e; ++p) acc += x[(long)c * lin + p];
            y[(long)c * lout + t] = acc / (float)div;
        }
    }
}
"""

ADAPTIVE_AVG_F32 = r"""
static void adaptive_avg_f32(const float *x, float *y, int ch, int lin, int lout)
{
    int c, t, p;
    for (c = 0; c < ch; ++c) {
        for (t = 0; t < lout; ++t) {
            const int s = (t * lin) / lout, e = ((t + 1) * lin + lout - 1) / lout;
            float acc = 0.0f;
            for (p = s; p < e; ++p) acc += x[(long)c * lin + p];
            y[(long)c * lout + t] = acc / (float)(e - s);
        }
    }
}
"""

# Int8 averages get their own calibrated scale: a mean over a long window spans far fewer codes than its input
# (global average pooling before the head), so keeping the input's scale would throw most of the precision away.
# The sum of (q - zp_in) over the bin is requantised with a per-output-position multiplier s_in / (count * s_out).
AVGPOOL_Q8 = r"""
static void avgpool_q8(const int8_t *x, int8_t *y, int ch, int lin, int lout, int k, int stride, int pad,
                       int32_t zp_in, int32_t zp_out, const int32_t *mult, const int8_t *shift)
{
    int c, t, p;
    for (c = 0; c < ch; ++c) {
        for (t = 0; t < lout; ++t) {
            int s = t * stride - pad, e = s + k;
            int32_t sum = 0;
            if (s < 0) s = 0;
            if (e > lin) e = lin;
            for (p = s; p < e; ++p) sum += (int32_t)x[(long)c * lin + p] - zp_in;
            y[(long)c * lout + t] = requantize(sum, mult[t], shift[t], zp_out, -128);
        }
    }
}
"""

ADAPTIVE_AVG_Q8 = r"""
static void adaptive_avg_q8(const int8_t *x, int8_t *y, int ch, int lin, int lout, int32_t zp_in, int32_t zp_out,
                            const int32_t *mult, const int8_t *shift)
{
    int c, t, p;
    for (c = 0; c < ch; ++c) {
        for (t = 0; t < lout; ++t) {
            const int s = (t * lin) / lout, e = ((t + 1) * lin + lout - 1) / lout;
            int32_t sum = 0;
            for (p = s; p < e; ++p) sum += (int32_t)x[(long)c * lin + p] - zp_in;
            y[(long)c * lout + t] = requantize(sum, mult[t], shift[t], zp_out, -128);
        }
    }
}
"""

RELU_F32 = r"""
static void relu_f32(const float *x, float *y, long n)
{
    long i;
    for (i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}
"""

RELU_Q8 = r"""
static void relu_q8(const int8_t *x, int8_t *y, long n, int8_t zp)
{
    long i;
    for (i = 0; i < n; ++i) y[i] = x[i] < zp ? zp : x[i];
}
"""


def kernels(kinds: set[str], int8: bool) -> str:
    """The C source of the kernels for the layer ``kinds`` a program uses."""
    t, c = ("q8", "int8_t") if int8 else ("f32", "float")
    parts = []
    if int8 and kinds & {"conv", "avgpool", "adaptive_avg"}:
        parts.append(REQUANTIZE_Q8)
    if "conv" in kinds:
        parts.append(CONV_Q8 if int8 else CONV_F32)
    if "maxpool" in kinds:
        parts.append(MAXPOOL.replace("{T}", t).replace("{C}", c))
    if "adaptive_max" in kinds:
        parts.append(ADAPTIVE_MAX.replace("{T}", t).replace("{C}", c))
    if "avgpool" in kinds:
        parts.append(AVGPOOL_Q8 if int8 else AVGPOOL_F32)
    if "adaptive_avg" in kinds:
        parts.append(ADAPTIVE_AVG_Q8 if int8 else ADAPTIVE_AVG_F32)
    if "relu" in kinds:
        parts.append(RELU_Q8 if int8 else RELU_F32)
    return "".join(parts)
