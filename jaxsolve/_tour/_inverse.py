"""Tour section: inpainting a 1-D signal with a Gaussian-mixture prior, against the exact
posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._context import TourContext, pyplot


def signal_prior(d: int = 32):
    """Two smooth signal classes on ``d`` points: ``sin(2 pi s)`` with a bump up or a bump down at
    ``s = 1/2`` (equal weights), each with a squared-exponential covariance. They differ mostly
    in the middle: hide the middle and the posterior has two modes."""
    from ..diffusion.analytic import GaussianMixture

    s = np.linspace(0.0, 1.0, d)
    cov = 0.25 * np.exp(-0.5 * ((s[:, None] - s[None]) / 0.12) ** 2) + 1e-3 * np.eye(d)
    bump = 1.2 * np.exp(-0.5 * ((s - 0.5) / 0.1) ** 2)
    base = np.sin(2 * np.pi * s)
    return GaussianMixture(
        np.array([0.5, 0.5]), np.stack([base + bump, base - bump]), np.stack([cov, cov])
    )


def mixture_posterior(weights, means, covs, observed, y, noise_std):
    r"""The posterior of a Gaussian mixture given the entries ``observed`` (a boolean mask) of
    :math:`x` with Gaussian noise: per component the Kalman update

    .. math:: K = C_{:,o}(C_{oo} + \sigma^2 I)^{-1},\quad m' = m + K(y_o - m_o),\quad
        C' = C - K C_{o,:},

    and the weights :math:`w_k' \propto w_k\,\mathcal N(y_o;\, m_{k,o},\, C_{k,oo} + \sigma^2 I)`
    (Bishop, "Pattern Recognition and Machine Learning", 2.3.3), in float64 NumPy: an
    independent derivation of what ``GaussianMixture.condition`` returns.

    Returns ``(weights, means, covs)``.
    """
    observed = np.asarray(observed, bool)
    if observed.ndim != 1 or not observed.any():
        raise ValueError("observed must be a 1-D boolean mask with at least one True entry.")
    y_o = np.asarray(y, np.float64)[observed]
    out_w, out_m, out_c = [], [], []
    for w, m, c in zip(weights, means, covs, strict=True):
        m, c = np.asarray(m, np.float64), np.asarray(c, np.float64)
        s = c[np.ix_(observed, observed)] + noise_std**2 * np.eye(observed.sum())
        gain = np.linalg.solve(s, c[observed]).T
        r = y_o - m[observed]
        _, logdet = np.linalg.slogdet(s)
        log_evidence = -0.5 * (r @ np.linalg.solve(s, r) + logdet + len(r) * np.log(2 * np.pi))
        out_w.append(np.log(w) + log_evidence)
        out_m.append(m + gain @ r)
        out_c.append(c - gain @ c[observed])
    log_w = np.array(out_w)
    weights = np.exp(log_w - log_w.max())
    return weights / weights.sum(), np.stack(out_m), np.stack(out_c)


def inverse_section(ctx: TourContext) -> None:
    from .. import diffusion as jd
    from ..diffusion import inverse as inv

    plt = pyplot()
    ctx.say("\n== Inverse problems: inpainting with a diffusion prior, against the exact posterior")
    d, noise_std = 32, 0.05
    prior = signal_prior(d)
    s = np.linspace(0.0, 1.0, d)
    observed = (s < 0.3) | (s > 0.7)  # the middle 12 of the 32 points are missing
    x_true = prior.sample(jax.random.PRNGKey(0), 1)[0]
    meas = inv.measure(
        jax.random.PRNGKey(1), inv.Mask(observed.astype(np.float32)), x_true, noise_std
    )
    posterior = prior.condition(meas)  # exact: again a Gaussian mixture

    covs = np.einsum("kij,kj,klj->kil", prior.eigvecs, prior.eigvals, prior.eigvecs)
    w_ref, m_ref, c_ref = mixture_posterior(
        prior.weights, prior.means, covs, observed, meas.y, noise_std
    )
    post_covs = np.einsum(
        "kij,kj,klj->kil", posterior.eigvecs, posterior.eigvals, posterior.eigvecs
    )
    gap = max(
        np.max(np.abs(np.asarray(posterior.weights) - w_ref)),
        np.max(np.abs(np.asarray(posterior.means) - m_ref)),
        np.max(np.abs(post_covs - c_ref)),
    )
    ctx.say(
        f"{d}-point signals from a 2-component Gaussian mixture, the middle {int((~observed).sum())} "
        f"points hidden, noise {noise_std} on the rest"
    )
    ctx.say(
        f"prior.condition(...) against the textbook Kalman update and evidence: max difference "
        f"{gap:.1e}; posterior weights of the bump-up / bump-down classes: "
        + " / ".join(f"{w:.3f}" for w in np.asarray(posterior.weights))
    )
    ctx.check(gap < 1e-4, "the exact posterior disagrees with the Kalman update")

    n, nfe = ctx.pick(1000, 4000), ctx.pick(50, 100)
    grid = jd.karras_sigmas(nfe, 0.002, 80.0)
    x_max = 80.0 * jax.random.normal(jax.random.PRNGKey(2), (n, d))
    v = float(jnp.trace(prior.covariance())) / d  # the data variance per coordinate
    # Every method on the same solver and grid (DPM-Solver++(2M), one evaluation a step); the
    # exact posterior, sampled the same way, measures what the driver itself loses.
    methods = {
        "exact posterior": posterior,
        "PiGDM": inv.PiGDM(prior, meas, data_variance=v),
    }
    if not ctx.quick:  # one compile more: the quick tour keeps to two samplers
        methods["DDNM"] = inv.DDNM(prior, meas, data_variance=v)
    approximate = [name for name in methods if name != "exact posterior"]
    samples = {
        name: jax.jit(lambda x, den=den: jd.sample(den, x, grid, jd.DPMSolverPP(order=2)))(x_max)
        for name, den in methods.items()
    }
    reference = posterior.sample(jax.random.PRNGKey(3), n)
    baselines = {
        "exact samples (floor)": posterior.sample(jax.random.PRNGKey(4), n),
        "prior (no measurement)": prior.sample(jax.random.PRNGKey(5), n),
    }
    sets = {**baselines, **samples}

    @jax.jit
    def distances(stack, reference):
        keys = jax.random.split(jax.random.PRNGKey(6), 4)
        return jax.vmap(
            lambda x: jnp.mean(jax.vmap(lambda k: jd.sliced_wasserstein(x, reference, k))(keys))
        )(stack)

    distance = np.asarray(distances(jnp.stack(list(sets.values())), reference))
    sw = dict(zip(sets, distance, strict=True))
    mean, spread = (
        np.asarray(posterior.mean()),
        np.sqrt(np.trace(np.asarray(posterior.covariance()))),
    )
    middle = ~observed
    base = np.asarray(prior.means).mean(0)  # the two classes' common part
    ctx.say(
        f"{n} samples each, NFE {nfe}: sliced Wasserstein distance to {n} other exact posterior "
        "samples, error of the mean over the posterior's spread, and the share of samples whose "
        "hidden middle lies above the classes' common part ('up'; the bump-up class has posterior "
        f"weight {float(posterior.weights[0]):.3f}, but its members' noise crosses the line too)"
    )
    ctx.say(f"  {'':24s} {'SW':>7s} {'mean err':>9s} {'up':>8s}")
    rows = {}
    for name, xs in sets.items():
        xs = np.asarray(xs)
        rows[name] = (
            sw[name],
            np.linalg.norm(xs.mean(0) - mean) / spread,
            np.mean(xs[:, middle].mean(1) > base[middle].mean()),
        )
        ctx.say(f"  {name:24s} {rows[name][0]:7.3f} {rows[name][1]:9.3f} {rows[name][2]:8.3f}")
    floor = sw["exact samples (floor)"]
    # Exact samples' own noise: the mean's error over the spread is ~ 1/sqrt(n), the share of a
    # mode has the binomial error; one draw of the floor varies by a good fraction of itself.
    ctx.say(f"  (Monte-Carlo error of the mean for exact samples: ~{1 / np.sqrt(n):.3f})")
    ctx.check(
        sw["exact posterior"] < 3 * floor and rows["exact posterior"][1] < 4 / np.sqrt(n),
        "the exact posterior sampled through the driver is off the Monte-Carlo floor",
    )
    # Two independent sets of exact samples: their shares 'up' differ by a binomial error.
    p_up = rows["exact samples (floor)"][2]
    stderr = np.sqrt(2 * p_up * (1 - p_up) / n)
    ctx.check(
        abs(rows["exact posterior"][2] - p_up) < 4 * stderr,
        "the driver's exact-posterior samples put the wrong mass in the two modes",
    )
    for name in approximate:
        ctx.check(
            np.all(np.isfinite(np.asarray(samples[name]))), f"{name} returned non-finite samples"
        )
        ctx.check(
            sw[name] < sw["prior (no measurement)"],
            f"{name}'s samples are no closer to the posterior than the prior's",
        )
    ctx.say(
        f"  ({' and '.join(approximate)} "
        + ("approximates" if len(approximate) == 1 else "approximate")
        + " p(x0 | x_s) by one Gaussian: closer than the prior, not the posterior; "
        "benchmarks/bench_inverse.py measures more methods and tasks)"
    )

    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.8), sharey=True)
    std = np.sqrt(np.diag(np.asarray(posterior.covariance())))
    for ax, name in zip(axes, methods, strict=True):
        xs = np.asarray(samples[name])
        ax.axvspan(0.3, 0.7, color="0.93")
        ax.fill_between(s, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.15)
        ax.plot(s, mean, "C0", lw=2, label="exact posterior mean +- 2 std")
        ax.plot(s, xs[:12].T, "C3", lw=0.6, alpha=0.6)
        ax.plot(s, xs.mean(0), "C3--", lw=1.5, label=f"{name}: mean and samples")
        ax.plot(s[observed], np.asarray(meas.y)[observed], "k.", ms=4, label="observed")
        ax.plot(s, np.asarray(x_true), "k:", lw=1, label="truth")
        ax.set_title(f"{name}: SW {sw[name]:.3f} (floor {floor:.3f})", fontsize=10)
        ax.set_xlabel("s")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "Inpainting the hidden middle (grey band) of a signal: samplers against the exact posterior"
    )
    ctx.savefig(fig, "inverse_inpainting.png")
