# Sublevel-set (0-dim) persistence of a 1-D signal + persim-style persistence image (Adams et al., Persistence
# Images, JMLR 2017), own implementation, independent of the edgedistill package (numpy + scipy.stats.norm).
# The tests embed its values (tests/test_topology.py). When ripser and persim are installed (`pip install ripser
# persim`) it also cross-checks itself against ripser (the sparse distance-matrix trick used by Sublevel-Set-TDA
# and by the official code of TDA-KD, https://github.com/jeunsom/TDA_KD, and TGD, https://github.com/jeunsom/TGD)
# and persim.PersImage; without them its last two lines are replaced by "cross-check skipped: No module named
# 'ripser'".
# Run it from the repository root with `python tests/reference/ref_persistence_image.py 2>/dev/null`; its standard
# output (with ripser 0.6.15 and persim 0.4.1) is committed as tests/reference/ref_persistence_image_output.txt.
import numpy as np
from scipy.stats import norm

def sublevel_pd0(x):
    """0-dim sublevel-set persistence of a path graph with vertex values x. Elder rule.
    Returns finite (birth, death) pairs (death > birth) plus the essential class (min, inf)."""
    n = len(x); order = np.argsort(x, kind='stable'); parent = -np.ones(n, int); birth = {}
    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]; i = parent[i]
        return i
    pairs = []
    for i in order:
        parent[i] = i; birth[i] = x[i]
        for j in (i-1, i+1):
            if 0 <= j < n and parent[j] != -1:
                ri, rj = find(i), find(j)
                if ri == rj: continue
                # younger root (larger birth) dies at x[i]
                young, old = (ri, rj) if birth[ri] > birth[rj] else (rj, ri)
                if x[i] - birth[young] > 0: pairs.append((birth[young], x[i]))
                parent[young] = old
    pairs.append((x.min(), np.inf))
    return np.array(pairs)

def persim_like_PI(dgm_bd, pixels=(5,5), spread=0.1, minBD=-1.0, maxBD=1.0):
    """Mirror of persim.PersImage (deprecated class) 'transform' for a single diagram."""
    nx, ny = pixels
    L = dgm_bd.copy(); L[:, 1] = L[:, 1] - L[:, 0]          # (birth, persistence)
    if len(L) == 0: return np.zeros((nx, ny))
    minBD = min(minBD, 0)
    dx = maxBD / ny
    xs_lo = np.linspace(minBD, maxBD, nx); xs_hi = xs_lo + dx
    ys_lo = np.linspace(0, maxBD, ny);    ys_hi = ys_lo + dx
    maxy = L[:, 1].max()
    img = np.zeros((nx, ny))
    for b, p in L:
        xsm = norm.cdf(xs_hi, b, spread) - norm.cdf(xs_lo, b, spread)
        ysm = norm.cdf(ys_hi, p, spread) - norm.cdf(ys_lo, p, spread)
        img += np.outer(xsm, ysm) * (p / maxy)                 # linear weight p/max(p)
    return img.T[::-1]                                        # rows: persistence (high at top), cols: birth

x = np.array([0.0, 0.6, -0.4, 0.8, 0.1, 0.5, -0.2, 0.3])
pd = sublevel_pd0(x)
print("PD (own):", pd.tolist())
fin = pd[np.isfinite(pd[:, 1])]
fin = fin[fin[:, 1] - fin[:, 0] > 1e-3]
thr = 0.01
fin = fin[(fin[:, 1] - fin[:, 0]) > thr]
img = persim_like_PI(fin, pixels=(5, 5), spread=0.1, minBD=-1.0, maxBD=1.0)
print("PI raw (5x5):\n", np.array2string(img, precision=8))
print("PI max-normalised:\n", np.array2string(img / img.max(), precision=8))
print("PI sum raw =", repr(img.sum()), " argmax =", np.unravel_index(img.argmax(), img.shape))

try:
    from ripser import ripser
    from scipy import sparse
    from persim import PersImage
    N = len(x); I = np.arange(N-1); J = np.arange(1, N); V = np.maximum(x[:-1], x[1:])
    I = np.concatenate((I, np.arange(N))); J = np.concatenate((J, np.arange(N))); V = np.concatenate((V, x))
    D = sparse.coo_matrix((V, (I, J)), shape=(N, N)).tocsr()
    dg = ripser(D, maxdim=0, distance_matrix=True)['dgms'][0]
    print("PD (ripser):", dg.tolist())
    dg = dg[dg[:, 1] - dg[:, 0] > 1e-3]; dg = dg[np.isfinite(dg[:, 1])]
    dg = dg[(dg[:, 1] - dg[:, 0]) > thr]
    pim = PersImage(pixels=[5, 5], spread=0.1, specs={"minBD": -1.0, "maxBD": 1.0}, verbose=False)
    ref = pim.transform(dg)
    print("max |own - persim| =", np.abs(ref - img).max())
except Exception as e:
    print("cross-check skipped:", e)
