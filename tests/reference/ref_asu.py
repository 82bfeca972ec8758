# Reference test vectors (numpy only), independent of the edgedistill package. Each section is written from the
# paper and, where named, the official code cited in the comment above its printed "==== N." header; the tests
# embed the printed values and cite them as "tests/reference/ref_asu.py section N". Run it from the repository
# root with `python tests/reference/ref_asu.py`; its output is committed as tests/reference/ref_asu_output.txt.
import numpy as np
np.set_printoptions(precision=10, suppress=False)

def log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
def softmax(z, axis=-1):
    return np.exp(log_softmax(z, axis))
def l2n(x, axis=1, eps=1e-12):           # torch F.normalize semantics (eps clamp on the norm)
    n = np.sqrt((x**2).sum(axis=axis, keepdims=True))
    return x / np.maximum(n, eps)

# Hinton, Vinyals, Dean, arXiv 1503.02531, in the RepDistiller reduction
# (https://github.com/HobbitLong/RepDistiller, distiller_zoo/KD.py DistillKL).
print("==== 0. vanilla KD (RepDistiller DistillKL: sum-KL / B * T^2)")
zs = np.array([[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]])
zt = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
T = 4.0
ps_log = log_softmax(zs / T); pt = softmax(zt / T)
kd = (pt * (np.log(pt) - ps_log)).sum() / zs.shape[0] * T**2
print("KD(T=4) =", repr(kd))
print("KD(student==teacher) =", (softmax(zt/T)*(np.log(softmax(zt/T))-log_softmax(zt/T))).sum())

# Choi, Som, Turaga, AMC-Loss, arXiv 2004.09805; official code https://github.com/hchoi71/AMC-Loss (Train_AMC.py).
print("==== 1. AMC loss (hchoi71/AMC-Loss Train_AMC.py semantics)")
emb = np.array([[1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [1.0, 1.0, 0.0],
                [0.0, 1.0, 1.0]])      # B=4 -> pairs (0,2) and (1,3)
y = np.array([0, 1, 0, 2])           # pair0 same class, pair1 different class
def amc(emb, y, m=0.5, scale=1.0):
    h = emb.shape[0] // 2
    phi = l2n(emb, 1)
    inner = (phi[:h] * phi[h:2*h]).sum(1)
    theta = np.arccos(np.clip(inner, -1 + 1e-7, 1 - 1e-7)) * scale
    same = (y[:h] == y[h:2*h])
    per = np.where(same, theta**2, np.maximum(m - theta, 0.0)**2)
    return per.mean(), theta, per
L, th, per = amc(emb, y)
print("theta =", th, " per-pair =", per, " L_AMC(m=0.5) =", repr(L))
L2, th2, per2 = amc(emb, y, m=1.5)
print("L_AMC(m=1.5) =", repr(L2), per2)
def rampup(epoch, L=50):
    if epoch < L:
        p = 1.0 - max(0.0, float(epoch)) / L
        return np.exp(-p*p*5.0)
    return 1.0
print("AMC weight w(t)=coeff*rampup*wmax: epoch0 forced 0; epoch 10 ->", 0.1*100*rampup(10), "; epoch 25 ->", 0.1*100*rampup(25), "; epoch>=50 ->", 0.1*100*rampup(60))

# Choi, Som, Turaga, Role of Orthogonality Constraints in Improving Properties of Deep Networks for Image
# Classification, arXiv 2009.10762; three candidate forms (variant A is the only one found in code).
print("==== 2. OS regularizer")
Fm = np.array([[3.0, 4.0, 0.0],
               [0.0, 1.0, 1.0],
               [2.0, 0.0, 2.0],
               [1.0, 1.0, 1.0]])     # B=4, D=3
Phi = l2n(Fm, 1)                   # row (sample) normalised
G = Phi.T @ Phi                    # D x D
os_fro = np.linalg.norm(G - np.eye(3), 'fro')
print("variant A (3rd-party impl): ||Phi^T Phi - I_D||_F =", repr(os_fro), " squared =", repr(os_fro**2))
Psi = l2n(Fm, 0)                   # column (feature-dim) normalised
GB = Psi.T @ Psi
print("variant B (column-normalised, D x D): ||Psi^T Psi - I||_F^2 =", repr(np.linalg.norm(GB-np.eye(3),'fro')**2))
Gs = Phi @ Phi.T
print("variant C (sample Gram, B x B): ||Phi Phi^T - I_B||_F^2 =", repr(np.linalg.norm(Gs-np.eye(4),'fro')**2))
Q = np.array([[1.0,0,0],[0,1.0,0],[0,0,1.0]])
print("orthonormal check (variant A on I_3 rows) =", np.linalg.norm(l2n(Q,1).T@l2n(Q,1)-np.eye(3)))

# Jeon et al., Leveraging angular distributions for improved knowledge distillation, Neurocomputing 518 (2023),
# arXiv 2302.14130; official loss module https://github.com/jeunsom/AMD_loss (AngularPenaltyLoss).
print("==== 3. AMD loss (jeunsom/AMD_loss AngularPenaltyLoss.amdloss semantics; s=64, m=1.35)")
def attn(fm, eps=1e-6):
    am = (np.abs(fm)**2).sum(1, keepdims=True)              # B,1,H,W
    nrm = np.sqrt((am**2).sum(axis=(2, 3), keepdims=True))
    return am / (nrm + eps)
def amd_code(xs, xt, s=64.0, m=1.35, eps=1e-7):
    def parts(x):
        q = attn(x).reshape(x.shape[0], -1)                      # positive map, in [0,1]
        num = s*np.cos(m*np.arccos(np.clip(q, -1+eps, 1-eps)))   # margin-applied positive logit
        neg = s*(1.0 - q)                                        # negative logit
        A = num - np.log(np.exp(num) + np.exp(neg))              # angular "attentive" feature
        return A, num, neg
    As, Ps, Ns = parts(xs); At, Pt, Nt = parts(xt)
    mse = lambda a, b: ((a-b)**2).mean()
    terms = (mse(l2n(As), l2n(At)), mse(l2n(Ps), l2n(Pt)), mse(l2n(Ns), l2n(Nt)))
    return sum(terms)/3.0, terms
rng = np.random.default_rng(0)
xs = np.array([[[[1.0, 0.5], [0.0, 2.0]], [[0.5, 0.5], [1.0, 0.0]]],
               [[[0.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]]])   # B=2,C=2,H=W=2
xt = np.array([[[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.5], [0.5, 0.0]]],
               [[[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]]])  # B=2,C=3 (channels may differ)
Lamd, terms = amd_code(xs, xt)
print("positive maps student:", attn(xs).reshape(2,-1)); print("positive maps teacher:", attn(xt).reshape(2,-1))
print("AMD(code) =", repr(Lamd), " terms(A,P,N) =", terms)
print("AMD(student==teacher) =", amd_code(xt, xt)[0])
print("AMD invariance to scaling student features x7:", amd_code(7*xs, xt)[0])
# paper form: 1/(3|L|) sum (||.||_F^2) (sum, not mean) for one layer pair
def amd_paper(xs, xt, **kw):
    _, terms = amd_code(xs, xt, **kw)
    n = xs.shape[0]*xs.shape[2]*xs.shape[3]
    return sum(t*n for t in terms)/3.0
print("AMD(paper eq., single layer pair, Frobenius^2 sums) =", repr(amd_paper(xs, xt)))
# global + local (4 quadrants), CODE semantics (AngularPenaltyLoss4b intent): attention normalised on the FULL map,
# then sliced into quadrants (no re-normalisation), each quadrant/global block with its own (1-q); 0.8*global + 0.2*mean(local)
def amd_from_q(qs, qt, s=64.0, m=1.35, eps=1e-7):
    def parts(q):
        num = s*np.cos(m*np.arccos(np.clip(q, -1+eps, 1-eps))); neg = s*(1.0-q)
        return num - np.log(np.exp(num)+np.exp(neg)), num, neg
    (As,Ps,Ns),(At,Pt,Nt) = parts(qs), parts(qt)
    mse = lambda a, b: ((a-b)**2).mean()
    return (mse(l2n(As),l2n(At)) + mse(l2n(Ps),l2n(Pt)) + mse(l2n(Ns),l2n(Nt)))/3.0
def amd_global_local(xs, xt):
    qs, qt = attn(xs), attn(xt)                      # B,1,H,W normalised over full map
    B, _, H, W = qs.shape; h, w = H//2, W//2
    g = amd_from_q(qs.reshape(B,-1), qt.reshape(B,-1))
    loc = np.mean([amd_from_q(qs[:,:,i*h:(i+1)*h, j*w:(j+1)*w].reshape(B,-1), qt[:,:,i*h:(i+1)*h, j*w:(j+1)*w].reshape(B,-1))
                   for i in range(2) for j in range(2)])
    return 0.8*g + 0.2*loc, g, loc
xs4 = np.arange(2*2*4*4, dtype=float).reshape(2,2,4,4) % 5 / 4.0
xt4 = (np.arange(2*3*4*4, dtype=float).reshape(2,3,4,4) * 7 % 11) / 10.0
print("AMD global+local (code semantics: full-map normalised attention sliced) -> (total, global, mean local) =", amd_global_local(xs4, xt4))
print("check amd_from_q == amd_code on global:", amd_from_q(attn(xs4).reshape(2,-1), attn(xt4).reshape(2,-1)), amd_code(xs4, xt4)[0])
# Choi et al., Understanding the Role of Mixup in Knowledge Distillation, WACV 2023, arXiv 2211.03946; official
# code https://github.com/hchoi71/MIX-KD (MIXSTDLoss, partial mixup PMU).
print("==== 4. MIX-KD: MIXSTDLoss (std-scaled logits), gamma=0.1, alpha=0.9")
ls = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
lt = np.array([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
tgt = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]])     # mixed / one-hot soft targets
stds = ls.std(axis=1, ddof=1, keepdims=True); stdt = lt.std(axis=1, ddof=1, keepdims=True)
lcls = 0.1 * (-(log_softmax(ls/stds)*tgt).sum()) / ls.shape[0]
p_t = softmax(lt/stdt)
ldiv = 0.9 * (p_t*(np.log(p_t) - log_softmax(ls/stds))).sum() / ls.shape[0]
print("std_s =", stds.ravel(), " std_t =", stdt.ravel())
print("loss_cls =", repr(lcls), " loss_div =", repr(ldiv), " total =", repr(lcls+ldiv))
print("invariance: scaling both logits by 5 leaves loss unchanged ->",
      0.1*(-(log_softmax(5*ls/(5*stds))*tgt).sum())/2 + 0.9*(p_t*(np.log(p_t)-log_softmax(5*ls/(5*stds)))).sum()/2)
# expected unmixed fraction in PMU as coded (randint with replacement)
for B, pct in [(64, 0.9), (64, 0.5), (128, 0.9)]:
    k = int(B*pct)
    print(f"PMU B={B} partmixup={pct}: k={k} indices drawn w/ replacement -> E[frac forced unmixed] = {1-(1-1/B)**k:.4f} (README intent: {pct})")
# deterministic mixup example (one sample)
x1 = np.array([1.0, 2.0]); x2 = np.array([3.0, -1.0]); a = 0.25
print("mix: a*x1+(1-a)*x2 =", a*x1+(1-a)*x2, " target a*e_y1+(1-a)*e_y2 with y1=0,y2=2 (C=3):", a*np.eye(3)[0]+(1-a)*np.eye(3)[2])

# Jeon et al., Topological Knowledge Distillation for Wearable Sensor Data, Asilomar 2022; official code
# https://github.com/jeunsom/TDA_KD (train_ad.py).
print("==== 5. TDA-KD (Asilomar'22 code, train_ad.py): two teachers, std/2 temperature, nn.KLDivLoss() 'mean'")
out = np.array([[1.0, 0.0, 2.0, -1.0], [0.5, 0.5, 0.0, 1.0]])   # B=2, C=4
t_img = np.array([[2.0, 0.0, 3.0, -2.0], [0.0, 1.0, 0.0, 2.0]])
t_sig = np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.5]])
y2 = np.array([2, 3]); lam = 0.99; T = 4.0
sd = lambda z: z.std(axis=1, ddof=1, keepdims=True)
ce = -log_softmax(out/sd(out))[np.arange(2), y2].mean()
def kl_mean(logq_s, p_t): return (p_t*(np.log(p_t)-logq_s)).mean()     # reduction='mean' over B*C
lq = log_softmax(2.0*out/sd(out))
k1 = kl_mean(lq, softmax(2.0*t_img/sd(t_img))); k2 = kl_mean(lq, softmax(2.0*t_sig/sd(t_sig)))
tot = (1-lam)*ce + 0.7*lam*T*T*k1 + 0.3*lam*T*T*k2
print("CE =", repr(ce), " KD_img =", repr(k1), " KD_sig =", repr(k2), " total =", repr(tot))

# Leveraging Topological Guidance for Improved Knowledge Distillation (TGD), GRaM @ ICML 2024; official code
# https://github.com/jeunsom/TGD (merged similarity maps).
print("==== 6. TGD (GRaM@ICML'24 code) merged similarity loss, alpha=0.99")
def sp_map(f): f = f.reshape(f.shape[0], -1); return f @ f.T
fs = np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])         # B=3 student feats (flattened)
ft1 = np.array([[2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
ft2 = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
alpha = 0.99
Gt = l2n(alpha*sp_map(ft1) + (1-alpha)*sp_map(ft2), 1)
Gs_ = l2n(sp_map(fs), 1)
sp = ((Gs_-Gt)**2).mean()
print("one-layer sim loss MSE =", repr(sp), " x(3000/3) contribution =", repr(sp*1000))

# Expected calibration error with equal-width confidence bins (Guo et al., On Calibration of Modern Neural
# Networks, ICML 2017).
print("==== 7. ECE (15 equal-width bins, top-1 confidence)")
P = np.array([[0.91, 0.09], [0.62, 0.38], [0.57, 0.43], [0.18, 0.82], [0.29, 0.71], [0.97, 0.03]])
yy = np.array([0, 1, 0, 1, 0, 0])
def ece(P, y, nb=15):
    conf = P.max(1); pred = P.argmax(1); acc = (pred == y).astype(float)
    edges = np.linspace(0, 1, nb+1); e = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any(): e += m.mean()*abs(acc[m].mean()-conf[m].mean())
    return e
print("ECE =", repr(ece(P, yy)))

# Amara et al., BD-KD: Balancing the Divergences for Online Knowledge Distillation, arXiv 2212.12965.
print("==== 8. forward / reverse KL per sample (BD-KD building blocks, T=1)")
ps = softmax(np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])); pt2 = softmax(np.array([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0]]))
fkl = (pt2*(np.log(pt2)-np.log(ps))).sum(1); rkl = (ps*(np.log(ps)-np.log(pt2))).sum(1)
H = lambda p: -(p*np.log(p)).sum(1)
print("KL(pt||ps) =", fkl, " KL(ps||pt) =", rkl, " H(ps) =", H(ps), " H(pt) =", H(pt2))

# Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019.
print("==== 9. SP-style similarity-preserving loss (Tung&Mori; basis for SK-KD / TaKD similarity terms)")
fs9 = np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]); ft9 = np.array([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
b = 3
Gs9 = l2n(fs9 @ fs9.T, 1); Gt9 = l2n(ft9 @ ft9.T, 1)
print("L_SP = ||Gs-Gt||_F^2 / b^2 =", repr(((Gs9-Gt9)**2).sum()/b**2))

# Choi, Jeon, Shukla, Turaga, Intra-class Patch Swap for Self-Distillation, Neurocomputing 2025, arXiv 2505.14124.
print("==== 10. Intra-class patch swap (augmentation, deterministic mask) + hypothesised instance-to-instance KD")
xa = np.arange(16, dtype=float).reshape(1, 4, 4)          # C=1, H=W=4
xb = 100 + np.arange(16, dtype=float).reshape(1, 4, 4)
P_ = 2                                                     # patch size -> 2x2 grid of patches
M = np.array([[1, 0], [0, 1]])                             # swap top-left and bottom-right patches
Mpix = np.kron(M, np.ones((P_, P_)))[None]                 # upsample patch mask to pixels
xa_t = (1-Mpix)*xa + Mpix*xb; xb_t = (1-Mpix)*xb + Mpix*xa
print("x~a =\n", xa_t[0]); print("x~b =\n", xb_t[0])
print("conservation x~a + x~b == xa + xb:", np.allclose(xa_t + xb_t, xa + xb))
za = np.array([[2.0, 0.5, -1.0]]); zb = np.array([[0.8, 0.6, 0.1]]); yy10 = np.array([0]); tau = 4.0
pa, pb = softmax(za), softmax(zb)
teacher_is_a = pa[0, yy10[0]] >= pb[0, yy10[0]]
zt_, zs_ = (za, zb) if teacher_is_a else (zb, za)
ce_ab = -log_softmax(za)[0, 0] - log_softmax(zb)[0, 0]
pt10 = softmax(zt_/tau)
kl10 = (pt10*(np.log(pt10) - log_softmax(zs_/tau))).sum() * tau**2
print("p_a(y) =", pa[0,0], " p_b(y) =", pb[0,0], " teacher = a" if teacher_is_a else " teacher = b")
print("CE_a + CE_b =", repr(ce_ab), "  tau^2*KL(p_T^tau || p_S^tau) =", repr(kl10))

# Jafari et al., Annealing Knowledge Distillation, 2021 (printed for comparison; no test uses it).
print("==== 11. Annealing-KD (Jafari et al. 2021) phase-1 target, for reference only")
zt11 = np.array([[4.0, -2.0, 1.0]]); zs11 = np.array([[1.0, 0.0, 0.5]]); tau_max = 10
for Tcur in [10, 5, 1]:
    phi = 1 - (Tcur - 1) / tau_max
    print(f"T={Tcur}: Phi={phi:.2f}  MSE(z_s, Phi*z_t) =", repr(((zs11 - phi*zt11)**2).mean()))

# Huang, Chen, Wei, Similarity-Keeping Knowledge Distillation, IEEE TETCI 8 (2024), arXiv 2212.03329; the
# cosine-similarity form follows the same lab's MUSE_EEG code (https://github.com/ChiShengChen/MUSE_EEG).
print("==== 12. 'similarity-keeping' form as coded by the same NYCU lab in MUSE_EEG (cosine-sim matrices, row-wise cosine)")
def cosmat(F): Fn = l2n(F.reshape(F.shape[0], -1), 1); return Fn @ Fn.T
Ss, St = cosmat(fs9), cosmat(ft9)
rowcos = (l2n(Ss, 1) * l2n(St, 1)).sum(1)          # F.cosine_similarity(Ss, St) along dim=1 (eps differences negligible here)
print("S_student =\n", Ss, "\nS_teacher =\n", St)
print("L_SK(MUSE form) = 1 - mean_i cos(S_s[i], S_t[i]) =", repr(1 - rowcos.mean()))
