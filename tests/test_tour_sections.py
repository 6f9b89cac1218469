"""The pure helpers behind the tour's sections, against closed forms and reference code.

The sections themselves train networks and run in CI through ``jaxsolve tour --quick``.
"""

import math

import numpy as np
import pytest

from jaxsolve._tour._inverse import mixture_posterior, signal_prior
from jaxsolve._tour._pinn import burgers_cole_hopf
from jaxsolve.diffusion import inverse as inv
from tests.pinn.exact import burgers_cole_hopf as reference_cole_hopf


def test_cole_hopf_matches_the_reference_quadrature():
    t = np.linspace(0.0, 1.0, 21)[:, None]
    x = np.linspace(-1.0, 1.0, 41)[None, :]
    np.testing.assert_allclose(burgers_cole_hopf(t, x), reference_cole_hopf(t, x), atol=1e-12)


def test_cole_hopf_closed_forms_and_symmetries():
    x = np.linspace(-1.0, 1.0, 33)
    # t = 0 is the initial condition; the boundary values vanish; u(t, -x) = -u(t, x).
    np.testing.assert_allclose(burgers_cole_hopf(0.0, x), -np.sin(np.pi * x), atol=1e-15)
    t = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(burgers_cole_hopf(t, 1.0), 0.0, atol=1e-12)
    np.testing.assert_allclose(burgers_cole_hopf(t, -1.0), 0.0, atol=1e-12)
    u = burgers_cole_hopf(t[:, None], x[None, :])
    np.testing.assert_allclose(u, -u[:, ::-1], atol=1e-12)
    # At large viscosity and small time the heat-kernel smoothing is first order in t:
    # u_t = -u u_x + nu u_xx at t = 0, u0 = -sin(pi x).
    nu, dt = 0.5, 1e-6
    u0 = -np.sin(np.pi * x)
    rate = -u0 * (-np.pi * np.cos(np.pi * x)) + nu * np.pi**2 * np.sin(np.pi * x)
    np.testing.assert_allclose((burgers_cole_hopf(dt, x, nu) - u0) / dt, rate, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(nu=0.0), "nu"), (dict(num_nodes=1), "num_nodes"), (dict(t=-1.0), "t must")],
)
def test_cole_hopf_rejects_bad_arguments(kwargs, match):
    args = dict(t=0.5, x=0.2) | kwargs
    with pytest.raises(ValueError, match=match):
        burgers_cole_hopf(**args)


def test_mixture_posterior_closed_form_in_one_dimension():
    # Prior 0.3 N(-1, 0.5) + 0.7 N(2, 1.5), y = x + noise of std 0.4, y = 0.5.
    w, m, c, s, y = np.array([0.3, 0.7]), np.array([-1.0, 2.0]), np.array([0.5, 1.5]), 0.4, 0.5
    weights, means, covs = mixture_posterior(
        w, m[:, None], c[:, None, None], np.array([True]), np.array([y]), s
    )
    evidence = w * np.exp(-0.5 * (y - m) ** 2 / (c + s**2)) / np.sqrt(2 * math.pi * (c + s**2))
    np.testing.assert_allclose(weights, evidence / evidence.sum(), rtol=1e-12)
    np.testing.assert_allclose(means[:, 0], m + c / (c + s**2) * (y - m), rtol=1e-12)
    np.testing.assert_allclose(covs[:, 0, 0], c * s**2 / (c + s**2), rtol=1e-12)


def test_mixture_posterior_agrees_with_the_oracle(x64):
    prior = signal_prior(16)
    observed = np.ones(16, bool)
    observed[5:11] = False
    y = np.where(observed, np.sin(np.linspace(0, 3, 16)), 0.0)
    posterior = prior.condition(inv.Mask(observed.astype(float)), y, 0.1)
    covs = np.einsum("kij,kj,klj->kil", prior.eigvecs, prior.eigvals, prior.eigvecs)
    weights, means, post_covs = mixture_posterior(
        prior.weights, prior.means, covs, observed, y, 0.1
    )
    np.testing.assert_allclose(weights, posterior.weights, atol=1e-10)
    np.testing.assert_allclose(means, posterior.means, atol=1e-10)
    oracle_covs = np.einsum(
        "kij,kj,klj->kil", posterior.eigvecs, posterior.eigvals, posterior.eigvecs
    )
    np.testing.assert_allclose(post_covs, oracle_covs, atol=1e-10)


def test_mixture_posterior_rejects_an_empty_observation():
    with pytest.raises(ValueError, match="observed"):
        mixture_posterior([1.0], np.zeros((1, 2)), np.eye(2)[None], np.zeros(2, bool), [0, 0], 0.1)
