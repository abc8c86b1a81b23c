"""Client-level differential privacy (DP-FedAvg, McMahan et al. 2018) and its RDP accountant.

Mechanism, per round: every client joins with probability q = C (Poisson sampling, see
:mod:`.sampling`); each participating client's update is clipped to L2 norm S and weighted
1; the sum gets Gaussian noise of std z·S; the server divides by the EXPECTED number of
clients q·K (a fixed denominator, so one client changes the average by at most S/(qK)).
Adding or removing one client changes the noised sum's mean by at most S: this is the
Poisson-subsampled Gaussian mechanism with noise multiplier z, composed over rounds.

Accounting: Rényi DP of the sampled Gaussian mechanism (Mironov, Talwar and Zhang, "Rényi
Differential Privacy of the Sampled Gaussian Mechanism", 2019): for order a,

    A_a = E_{x ~ N(0, z²)} [ (1 - q + q · N(1, z²)(x) / N(0, z²)(x))^a ],  RDP(a) = log A_a / (a-1)

exactly (closed binomial sum) for integer a and by the paper's two convergent series for
fractional a. T rounds compose to T·RDP(a); (ε, δ) follows by the conversion of Canonne,
Kamath and Steinke 2020 (``improved``, the default, tighter) or the classic
``ε = RDP(a) + log(1/δ)/(a-1)`` (Mironov 2017), minimised over the orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

NOISE_STREAM = 0xD1FF
DEFAULT_ORDERS = np.concatenate([1.0 + np.arange(1, 100) / 10.0, np.arange(11, 64),
                                 [128.0, 256.0, 512.0]])


def clip_update(delta: np.ndarray, bound: float) -> float:
    """Scale ``delta`` in place to L2 norm at most ``bound``; return its norm before."""
    norm = math.sqrt(float(np.dot(delta, delta)))
    if norm > bound:
        delta *= bound / norm
    return norm


def add_gaussian_noise(values: np.ndarray, std: float, scratch: np.ndarray, *, seed: int,
                       round_index: int) -> None:
    """``values += N(0, std²)`` per element, from the (seed, round) stream: every rank adds the
    same noise (the central server's noise; the same for any number of ranks)."""
    rng = np.random.default_rng([seed, NOISE_STREAM, round_index])
    rng.standard_normal(out=scratch, dtype=scratch.dtype)
    scratch *= std
    values += scratch


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b."""
    if b == -math.inf:
        return a
    if b >= a:
        return -math.inf
    return a + math.log1p(-math.exp(b - a))


def _log_a_integer(q: float, sigma: float, order: int) -> float:
    """log A_a for integer a: sum_k C(a,k) (1-q)^(a-k) q^k exp((k²-k)/(2σ²))."""
    total = -math.inf
    for k in range(order + 1):
        term = (special.gammaln(order + 1) - special.gammaln(k + 1)
                - special.gammaln(order - k + 1) + k * math.log(q)
                + (order - k) * math.log1p(-q) + (k * k - k) / (2 * sigma * sigma))
        total = _log_add(total, float(term))
    return total


def _log_a_fractional(q: float, sigma: float, order: float) -> float:
    """log A_a for fractional a: split the integral where q·μ1 = (1-q)·μ0 (at z0) and expand
    (1 + r)^a binomially on each side, where the ratio r is at most 1."""
    z0 = sigma * sigma * math.log(1.0 / q - 1.0) + 0.5
    below = above = -math.inf  # running log-sums of the two series (they stay positive)
    i = 0
    while True:
        coef = float(special.binom(order, i))
        if coef == 0.0:
            break
        log_coef = math.log(abs(coef))
        j = order - i
        term0 = (log_coef + i * math.log(q) + j * math.log1p(-q)
                 + (i * i - i) / (2 * sigma * sigma) + special.log_ndtr((z0 - i) / sigma))
        term1 = (log_coef + j * math.log(q) + i * math.log1p(-q)
                 + (j * j - j) / (2 * sigma * sigma) + special.log_ndtr((j - z0) / sigma))
        if coef > 0:
            below, above = _log_add(below, float(term0)), _log_add(above, float(term1))
        else:
            below, above = _log_sub(below, float(term0)), _log_sub(above, float(term1))
        i += 1
        if i > order and max(term0, term1) < -30.0:
            break
    return _log_add(below, above)


def rdp_sampled_gaussian(q: float, noise: float, orders: np.ndarray) -> np.ndarray:
    """RDP of ONE application of the sampled Gaussian mechanism at each order (> 1)."""
    out = np.empty(len(orders), dtype=np.float64)
    for index, order in enumerate(orders):
        order = float(order)
        if q == 0.0:
            out[index] = 0.0
        elif noise == 0.0:
            out[index] = math.inf
        elif q == 1.0:
            out[index] = order / (2 * noise * noise)
        elif order == int(order):
            out[index] = _log_a_integer(q, noise, int(order)) / (order - 1)
        else:
            out[index] = _log_a_fractional(q, noise, order) / (order - 1)
    return out


def epsilon_from_rdp(orders: np.ndarray, rdp: np.ndarray, delta: float, *,
                     conversion: str = "improved") -> tuple[float, float]:
    """(ε, best order) of an RDP curve at ``delta``."""
    orders = np.asarray(orders, dtype=np.float64)
    rdp = np.asarray(rdp, dtype=np.float64)
    if conversion == "classic":
        eps = rdp + math.log(1.0 / delta) / (orders - 1)
    elif conversion == "improved":
        eps = (rdp + np.log1p(-1.0 / orders)
               - (math.log(delta) + np.log(orders)) / (orders - 1))
    else:
        raise ValueError(f"unknown conversion {conversion!r}")
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(orders[best])


@dataclass(kw_only=True)
class RdpAccountant:
    """Privacy spent after ``rounds`` rounds of the Poisson-sampled Gaussian mechanism."""

    q: float
    noise: float
    orders: np.ndarray = field(default_factory=lambda: DEFAULT_ORDERS.copy())
    rounds: int = 0
    _per_round: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._per_round = rdp_sampled_gaussian(self.q, self.noise, self.orders)

    def step(self, rounds: int = 1) -> None:
        """Account for ``rounds`` more rounds."""
        self.rounds += rounds

    def epsilon(self, delta: float, *, conversion: str = "improved") -> float:
        """ε at ``delta`` after the rounds so far."""
        if self.rounds == 0:
            return 0.0
        return epsilon_from_rdp(self.orders, self.rounds * self._per_round, delta,
                                conversion=conversion)[0]


@dataclass(kw_only=True)
class ClientPrivacy:
    """What a federated round does for privacy around the mean of client updates: clip each
    client's update to ``clip`` (0: no clipping), and with ``noise`` > 0 run DP-FedAvg
    (weight 1 per client, Gaussian noise on the sum, division by the expected q·K clients,
    Poisson sampling, RDP accounting). Without noise the mean is example-weighted."""

    clip: float = 0.0
    noise: float = 0.0
    delta: float = 1e-5
    q: float  # client sampling rate
    clients: int  # K
    seed: int
    accountant: RdpAccountant | None = field(init=False, default=None)
    _scratch: np.ndarray | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dp:
            self.accountant = RdpAccountant(q=self.q, noise=self.noise)

    @property
    def dp(self) -> bool:
        """Client-level DP (noise on the clipped sum, Poisson client sampling)."""
        return self.noise > 0.0

    @property
    def rounds(self) -> int:
        """Rounds accounted so far (0 without DP)."""
        return self.accountant.rounds if self.accountant is not None else 0

    @rounds.setter
    def rounds(self, value: int) -> None:
        if self.accountant is not None:
            self.accountant.rounds = value

    def prepare(self, delta: np.ndarray) -> None:
        """Clip one client's update in place (when clipping)."""
        if self.clip > 0.0:
            clip_update(delta, self.clip)

    def weight(self, rows: int) -> float:
        """A client's weight in the mean: its rows, or 1 under DP."""
        return 1.0 if self.dp else float(rows)

    def mean(self, total: np.ndarray, weight_sum: float, round_index: int) -> None:
        """Turn the weighted sum of the round's updates into the update the server applies
        (in place), and account for the round."""
        if self.dp:
            if self._scratch is None:
                self._scratch = np.empty_like(total)
            add_gaussian_noise(total, self.noise * self.clip, self._scratch, seed=self.seed,
                               round_index=round_index)
            total *= 1.0 / (self.q * self.clients)
        elif weight_sum > 0:
            total *= 1.0 / weight_sum

    def step(self) -> None:
        """Account for one more round (nothing without DP)."""
        if self.accountant is not None:
            self.accountant.step()

    def metrics(self) -> dict[str, float]:
        """ε spent so far at δ, for the round's metrics line (empty without DP)."""
        if self.accountant is None:
            return {}
        return {"epsilon": self.accountant.epsilon(self.delta), "delta": self.delta}

    def summary(self) -> dict[str, object] | None:
        """The mechanism and ε so far, for summary.json (None without DP)."""
        if self.accountant is None:
            return None
        return {"sampling": "poisson", "q": self.q, "noise_multiplier": self.noise,
                "clip": self.clip, "delta": self.delta,
                "epsilon": self.accountant.epsilon(self.delta)}
