"""The one-dimensional Gaussian process of the Probabilistic Line Search (private helper of :mod:`lsbench.optim.pls`).

Everything here runs on the host in float64 NumPy: a line search holds at most a few dozen observations, so the
GP is a tiny dense problem, and its decisions (accept? where next?) are host decisions anyway.

**Prior.** A once-integrated Wiener process over the scaled step t ≥ 0 with offset τ (thesis Eq. 2.28, τ = 10,
scale θ = 1). With t̃ = t + τ, t̃′ = t′ + τ:

* k(t, t′) = t̃²t̃′/2 − t̃³/6 if t < t′, else t̃′²t̃/2 − t̃′³/6  (= m³/3 + |t − t′| m²/2 with m = min(t̃, t̃′));
* ∂k/∂t′ = t̃²/2 if t < t′, else t̃t̃′ − t̃′²/2;   ∂k/∂t = t̃t̃′ − t̃²/2 if t < t′, else t̃′²/2;
* ∂²k/∂t∂t′ = min(t̃, t̃′);
* for the posterior mean's higher derivatives: ∂²k/∂t² = t′ − t, ∂³k/∂t²∂t′ = 1, ∂³k/∂t³ = −1 if t < t′, else 0.

**Observations** are pairs (f(tᵢ), f′(tᵢ)) with independent Gaussian noise of variances σ_f²(tᵢ), σ_f′²(tᵢ) (one
pair of variances per observation). The posterior mean is a cubic spline between observations.

**Exact unless singular.** The Gram matrix is factorized by Cholesky as it is, so with a well-conditioned matrix
the posterior is the exact one. Only if the factorization fails, or one of its pivots falls below 1e-12 of the
largest diagonal entry (the matrix is singular to working precision: an observation repeated without noise, or
two noise-free observations at practically the same t), is a jitter of 1e-12 times that entry added to the whole
diagonal and the matrix factorized again. Applied always, that jitter (about 1e-9 at typical entries) shifted
the posterior mean by about 1e-6 and changed Wolfe decisions on nearly noise-free lines.

**Wolfe probability** (the bounded form of the TF reference and its PyTorch ports): with
A = f(0) − f(t) + c₁ t f′(0) and B = f′(t), p = P(A ≥ 0, lo ≤ B ≤ hi) under the joint Gaussian posterior of
(f(0), f′(0), f(t), f′(t)). The rectangle probability of the standard bivariate normal is computed exactly with
Owen's T function (no quadrature tables).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import ndtr, owens_t

TAU = 10.0
_JITTER = 1e-12  # relative to the Gram matrix's largest diagonal entry; added only to a singular Gram matrix
_DETERMINISTIC = 1e-9  # variances below this count as zero in the Wolfe probability (as in the reference)


# -- kernel ----------------------------------------------------------------------------------------------------------


def kernel_blocks(a: np.ndarray, b: np.ndarray, tau: float = TAU, higher: bool = False) -> dict[str, np.ndarray]:
    """The prior covariances between f/f′ at every a (rows) and every b (columns).

    Keys: ``k`` = Cov(f(a), f(b)), ``kd`` = Cov(f(a), f′(b)) = ∂k/∂b, ``dk`` = Cov(f′(a), f(b)) = ∂k/∂a,
    ``dkd`` = Cov(f′(a), f′(b)); with ``higher`` also the derivatives in the first argument that the posterior
    mean's second and third derivatives need: ``ddk`` = ∂²k/∂a², ``ddkd`` = ∂³k/∂a²∂b, ``dddk`` = ∂³k/∂a³.
    """
    a = np.asarray(a, dtype=np.float64)[:, None] + tau
    b = np.asarray(b, dtype=np.float64)[None, :] + tau
    lt = a < b
    aa, bb, ab = a * a, b * b, a * b
    blocks = {
        "k": np.where(lt, aa * b / 2 - aa * a / 6, bb * a / 2 - bb * b / 6),
        "kd": np.where(lt, aa / 2, ab - bb / 2),
        "dk": np.where(lt, ab - aa / 2, bb / 2),
        "dkd": np.minimum(a, b),
    }
    if higher:
        blocks["ddk"] = np.where(lt, b - a, 0.0)
        blocks["ddkd"] = lt.astype(np.float64)
        blocks["dddk"] = -blocks["ddkd"]
    return blocks


def _square(top_left: np.ndarray, top_right: np.ndarray, bottom_left: np.ndarray, bottom_right: np.ndarray):
    """``[[top_left, top_right], [bottom_left, bottom_right]]`` (cheaper than ``np.block`` for tiny blocks)."""
    return np.concatenate(
        [np.concatenate([top_left, top_right], axis=1), np.concatenate([bottom_left, bottom_right], axis=1)]
    )


# -- bivariate normal --------------------------------------------------------------------------------------------


def bivariate_normal_cdf(h: float, k: float, rho: float) -> float:
    """P(X ≤ h, Y ≤ k) for a standard bivariate normal with correlation ρ (Owen 1956, via Owen's T)."""
    rho = min(max(rho, -1.0), 1.0)
    if np.isinf(h) or np.isinf(k):
        if h == -np.inf or k == -np.inf:
            return 0.0
        return float(ndtr(min(h, k)))  # one bound is +inf: a marginal
    if 1.0 - abs(rho) < 1e-12:
        if rho > 0:
            return float(ndtr(min(h, k)))
        return float(max(0.0, ndtr(h) + ndtr(k) - 1.0))
    # the formula divides by h and k; the CDF is continuous, so a zero is nudged off
    h = h if abs(h) > 1e-14 else 1e-14
    k = k if abs(k) > 1e-14 else 1e-14
    s = np.sqrt(1.0 - rho * rho)
    beta = 0.0 if h * k > 0 else 0.5
    value = 0.5 * ndtr(h) + 0.5 * ndtr(k) - owens_t(h, (k - rho * h) / (h * s)) - owens_t(k, (h - rho * k) / (k * s))
    return float(min(max(value - beta, 0.0), 1.0))


def bounded_wolfe_probability(
    mean_a: float, mean_b: float, var_a: float, var_b: float, cov_ab: float, low: float, high: float
) -> float:
    """P(A ≥ 0, low ≤ B ≤ high) for jointly Gaussian (A, B).

    A variance below 1e-9 makes that variable deterministic (its condition is an indicator), as in the reference;
    unlike the reference, the deterministic case tests the same bounded curvature condition as the random one
    (the reference tests B ≥ 0 there).
    """
    a_fixed, b_fixed = var_a < _DETERMINISTIC, var_b < _DETERMINISTIC
    in_band = low <= mean_b <= high
    if a_fixed and b_fixed:
        return float(mean_a >= 0 and in_band)
    if a_fixed:
        if mean_a < 0:
            return 0.0
        sd_b = np.sqrt(var_b)
        return float(ndtr((high - mean_b) / sd_b) - ndtr((low - mean_b) / sd_b))
    if b_fixed:
        return float(ndtr(mean_a / np.sqrt(var_a))) if in_band else 0.0
    sd_a, sd_b = np.sqrt(var_a), np.sqrt(var_b)
    rho = cov_ab / (sd_a * sd_b)
    # standardized: X = (A − m_A)/sd_A ≥ −m_A/sd_A, Y = (B − m_B)/sd_B between the standardized bounds;
    # P(X ≥ x, Y ≥ y) = Φ₂(−x, −y; ρ), and the band is the difference of two such upper orthants
    x = -mean_a / sd_a
    y_low, y_high = (low - mean_b) / sd_b, (high - mean_b) / sd_b
    p = bivariate_normal_cdf(-x, -y_low, rho) - bivariate_normal_cdf(-x, -y_high, rho)
    return float(min(max(p, 0.0), 1.0))


# -- the GP ------------------------------------------------------------------------------------------------------


def _solve_gram(gram: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(gram⁻¹, gram⁻¹ values, jittered)``: the jitter is added only to a singular Gram matrix (module docstring)."""
    scale = float(np.abs(np.diag(gram)).max())
    try:
        factor = cho_factor(gram, lower=True, check_finite=False)
        if np.diag(factor[0]).min() ** 2 > _JITTER * scale:
            return cho_solve(factor, np.eye(len(gram))), cho_solve(factor, values), False
    except np.linalg.LinAlgError:
        pass
    jittered = gram + _JITTER * scale * np.eye(len(gram))
    try:
        factor = cho_factor(jittered, lower=True, check_finite=False)
        return cho_solve(factor, np.eye(len(gram))), cho_solve(factor, values), True
    except np.linalg.LinAlgError:  # not even positive definite with the jitter: a plain inverse, as before
        inverse = np.linalg.inv(jittered)
        return inverse, inverse @ values, True


class LineGP:
    """GP posterior over f along one line, from noisy observations of f and f′.

    ``observations`` are tuples ``(t, f, df, fvar, dfvar)`` in the line search's scaled units. The Gram matrix
    (at most a few dozen rows) is inverted once, through its Cholesky factor, with the jitter only if it is
    singular (:attr:`jittered`); every query is then a few small matrix products, vectorized over the query points.
    """

    def __init__(self, observations: Sequence[Sequence[float]], tau: float = TAU) -> None:
        self.tau = tau
        data = np.asarray(observations, dtype=np.float64).reshape(-1, 5)
        self.t, f, df, fvar, dfvar = data.T
        n = len(self.t)
        self._inverse = np.zeros((0, 0))
        self._weights = np.zeros(0)
        self.jittered = False  # whether the Gram matrix was singular and needed the jitter
        if n == 0:
            return
        blocks = kernel_blocks(self.t, self.t, tau)
        gram = _square(blocks["k"] + np.diag(fvar), blocks["kd"], blocks["dk"], blocks["dkd"] + np.diag(dfvar))
        if not np.all(np.isfinite(gram)):
            raise ValueError("PLS: non-finite GP observation variances")
        self._inverse, self._weights, self.jittered = _solve_gram(gram, np.concatenate([f, df]))

    def _query(self, s: Sequence[float] | np.ndarray, higher: bool = False) -> dict[str, np.ndarray]:
        """Kernel blocks between the query points (rows) and the observations (columns)."""
        return kernel_blocks(np.atleast_1d(np.asarray(s, dtype=np.float64)), self.t, self.tau, higher)

    def _apply(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.concatenate([left, right], axis=1) @ self._weights

    def derivatives(self, s: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean μ and its derivatives μ′, μ″, μ‴ at every s.

        μ″ is piecewise linear and μ‴ piecewise constant between observations: query them inside a cell.
        """
        b = self._query(s, higher=True)
        return (
            self._apply(b["k"], b["kd"]),
            self._apply(b["dk"], b["dkd"]),
            self._apply(b["ddk"], b["ddkd"]),
            self._apply(b["dddk"], np.zeros_like(b["dddk"])),
        )

    def mean(self, s: Sequence[float] | np.ndarray) -> np.ndarray:
        """Posterior mean μ(s)."""
        b = self._query(s)
        return self._apply(b["k"], b["kd"])

    def d1(self, s: Sequence[float] | np.ndarray) -> np.ndarray:
        """μ′(s), the posterior mean of f′."""
        b = self._query(s)
        return self._apply(b["dk"], b["dkd"])

    def joint(self, s: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and covariance of ``[f(s₁), …, f(s_m), f′(s₁), …, f′(s_m)]``."""
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        prior = kernel_blocks(s, s, self.tau)
        cov = _square(prior["k"], prior["kd"], prior["dk"], prior["dkd"])
        if len(self.t) == 0:
            return np.zeros(2 * len(s)), cov
        b = self._query(s)
        # row j: the covariances of the j-th queried quantity with all 2N observations
        cross = _square(b["k"], b["kd"], b["dk"], b["dkd"])
        return cross @ self._weights, cov - cross @ self._inverse @ cross.T

    def wolfe_quantities(self, ts: Sequence[float] | np.ndarray, c1: float) -> tuple[np.ndarray, ...]:
        """Mean and covariance of A = f(0) − f(t) + c₁ t f′(0) and B = f′(t) at every t.

        Returns arrays ``(m_A, m_B, V_AA, V_BB, V_AB)``, from one joint posterior over 0 and all ts.
        """
        ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
        m = len(ts) + 1
        mean, cov = self.joint(np.concatenate([[0.0], ts]))
        f0, df0, ft, dft = 0, m, np.arange(1, m), np.arange(m + 1, 2 * m)
        ct = c1 * ts
        mean_a = mean[f0] - mean[ft] + ct * mean[df0]
        mean_b = mean[dft]
        var_a = (
            cov[f0, f0]
            + ct * ct * cov[df0, df0]
            + cov[ft, ft]
            + 2 * ct * (cov[f0, df0] - cov[df0, ft])
            - 2 * cov[f0, ft]
        )
        var_b = cov[dft, dft]
        cov_ab = cov[f0, dft] + ct * cov[df0, dft] - cov[ft, dft]
        return mean_a, mean_b, var_a, var_b, cov_ab

    def wolfe_probabilities(self, ts: Sequence[float] | np.ndarray, c1: float, low: float, high: float) -> np.ndarray:
        """p_Wolfe(t) = P(f(t) ≤ f(0) + c₁ t f′(0), low ≤ f′(t) ≤ high) under the posterior, for every t."""
        quantities = zip(*self.wolfe_quantities(ts, c1), strict=True)
        return np.array([bounded_wolfe_probability(*q, low, high) for q in quantities])

    def wolfe_probability(self, t: float, c1: float, low: float, high: float) -> float:
        """p_Wolfe at one t."""
        return float(self.wolfe_probabilities([t], c1, low, high)[0])

    def expected_improvements(self, ts: Sequence[float] | np.ndarray) -> np.ndarray:
        """E[max(0, η − f(t))] at every t, with η the lowest posterior mean at an observed point."""
        ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
        eta = float(self.mean(self.t).min()) if len(self.t) else 0.0
        mean, cov = self.joint(ts)
        m = mean[: len(ts)]
        sd = np.sqrt(np.maximum(np.diag(cov)[: len(ts)], 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (eta - m) / sd
            ei = (eta - m) * ndtr(z) + sd * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        return np.where(sd < 1e-12, np.maximum(eta - m, 0.0), ei)

    def cell_candidates(self, target_df: float) -> list[float]:
        """In each cell between consecutive observed t, the point where μ′ rises through ``target_df``.

        μ′ is quadratic inside a cell; its expansion at the cell's midpoint is solved for μ′ = target_df with
        μ″ > 0, keeping roots strictly inside the cell (a near-zero quadratic coefficient falls back to the linear
        equation, which needs a positive slope), as the reference does.
        """
        points = np.unique(self.t)
        if len(points) < 2:
            return []
        mids = 0.5 * (points[:-1] + points[1:])
        _, d1, d2, d3 = self.derivatives(mids)
        candidates = []
        for left, right, mid, c, b, a in zip(points[:-1], points[1:], mids, d1 - target_df, d2, 0.5 * d3, strict=True):
            if abs(a) < 1e-9:
                if b <= 1e-9:
                    continue
                x = -c / b
            else:
                disc = b * b - 4 * a * c
                if disc <= 0:
                    continue
                x = (-b + np.sqrt(disc)) / (2 * a)  # the root where μ″ = b + 2 a x = +√disc > 0
            if left < mid + x < right:
                candidates.append(float(mid + x))
        return candidates
