r"""Convergent Graph Solver (CGS) layer.

"Convergent Graph Solvers" (Park, Choi, Kwon, Kim & Park): predict a graph system's stationary
properties as the decoded fixed point of an *input-dependent, contracting linear* map. For a
graph with node features :math:`x_i` and edge features :math:`e_{ij}` (edge :math:`j \to i`):

1. Build, per head :math:`h`, the transition :math:`T_h(H) = \gamma A_h H + B_h` with
   :math:`B_h = \mathrm{enc}(x)_h \in \mathbb R^{N \times d}` and edge coefficients
   :math:`w_{ij} = \mathrm{edge}(e_{ij}, x_j, x_i)_h`, normalised per receiving node

   .. math:: (A_h)_{ij} = \frac{w_{ij}}{\max\big(1, \sum_{k} |w_{ik}|\big)},

   so every row of :math:`A_h` has absolute sum at most 1 and :math:`\|\gamma A_h\|_\infty \le
   \gamma < 1`: :math:`T_h` is a contraction (Banach), its fixed point exists and is unique.
2. Solve :math:`H_h^* = (I - \gamma A_h)^{-1} B_h` with :func:`fixed_point` (sparse
   message passing, no dense matrix).
3. Decode :math:`[H_1^*, \dots, H_m^*]_i` node-wise.

Gradients come from the implicit function theorem, as in the paper (whose closed form is the
:class:`ImplicitDiff` backward here); the backward system is contracting as well, so
:class:`Picard` on the adjoint converges with the same rate :math:`\gamma`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._core import as_float, check_in_open_interval, check_int
from ._anderson import Anderson
from ._base import AbstractBackward, AbstractSolver, Solution
from ._convergence import Convergence
from ._solve import ImplicitSolve, _Residual


def _propagate(coeffs, h, senders, receivers):
    """``(A h)_i = sum_{edges j -> i} a_ij h_j`` for every head; ``h`` is (heads, N, d)."""
    n = h.shape[1]
    messages = coeffs.T[:, :, None] * h[:, senders, :]
    return jax.vmap(lambda m: jax.ops.segment_sum(m, receivers, num_segments=n))(messages)


def _transition(h, args):
    coeffs, b, gamma, senders, receivers = args
    return gamma * _propagate(coeffs, h, senders, receivers) + b


class ConvergentGraphSolver(ImplicitSolve):
    """CGS layer (see the module docstring).

    ``__call__(nodes, edges, senders, receivers) -> (outputs, Solution)`` with ``nodes``
    (N, node_dim), ``edges`` (E, edge_dim) and integer ``senders``, ``receivers`` (E,) for the
    edges ``senders[e] -> receivers[e]``; ``outputs`` is (N, out_dim). Batch graphs of equal
    padded size with ``jax.vmap``. ``gamma`` (the contraction factor) is not trained.

    ``throw=True`` by default, as in :func:`fixed_point`: the transition is a
    ``gamma``-contraction by construction, so the solve converges (Picard at rate ``gamma``:
    ``gamma ** max_steps`` is 8e-31 for the defaults 0.5 and 100), and a solve that fails is a
    real fault — a NaN in the inputs or weights, or too small a ``max_steps`` for a ``gamma``
    near 1 — not a normal case to report quietly. With ``throw=False`` the code is in the
    returned :class:`Solution` and derivatives through a failed solve are NaN.
    """

    node_encoder: eqx.nn.MLP
    edge_encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP
    gamma: Float[Array, ""]
    heads: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        out_dim: int,
        *,
        key: PRNGKeyArray,
        hidden: int = 16,
        heads: int = 4,
        gamma: float = 0.5,
        width: int = 64,
        depth: int = 2,
        solver: AbstractSolver | None = None,
        backward: AbstractBackward | None = None,
        max_steps: int = 100,
        rtol: float | Array = 1e-5,
        atol: float | Array = 1e-6,
        throw: bool = True,
    ):
        for name, v in dict(node_dim=node_dim, edge_dim=edge_dim).items():
            check_int(f"ConvergentGraphSolver {name}", v, minimum=0)
        for name, v in dict(out_dim=out_dim, hidden=hidden, heads=heads).items():
            check_int(f"ConvergentGraphSolver {name}", v)
        check_in_open_interval("ConvergentGraphSolver gamma", gamma, 0.0, 1.0)
        solver = Anderson() if solver is None else solver
        super().__init__(solver, backward, Convergence(rtol, atol, max_steps=max_steps), throw)
        k1, k2, k3 = jax.random.split(key, 3)
        self.node_encoder = eqx.nn.MLP(node_dim, heads * hidden, width, depth, jax.nn.gelu, key=k1)
        self.edge_encoder = eqx.nn.MLP(
            edge_dim + 2 * node_dim, heads, width, depth, jax.nn.gelu, key=k2
        )
        self.decoder = eqx.nn.MLP(heads * hidden, out_dim, width, depth, jax.nn.gelu, key=k3)
        self.gamma = as_float(gamma)
        self.heads = heads
        self.hidden = hidden

    def transition(
        self,
        nodes: Float[Array, "N node_dim"],
        edges: Float[Array, "E edge_dim"],
        senders: Int[Array, " E"],
        receivers: Int[Array, " E"],
    ) -> tuple[Float[Array, "E heads"], Float[Array, "heads N hidden"]]:
        """Normalised edge coefficients :math:`a_{ij}` per head and the offsets :math:`B`."""
        n = nodes.shape[0]
        b = jax.vmap(self.node_encoder)(nodes).reshape(n, self.heads, self.hidden)
        feats = jnp.concatenate([edges, nodes[senders], nodes[receivers]], axis=-1)
        w = jax.vmap(self.edge_encoder)(feats)
        row = jax.ops.segment_sum(jnp.abs(w), receivers, num_segments=n)
        coeffs = w / jnp.maximum(row[receivers], 1.0)
        return coeffs, jnp.transpose(b, (1, 0, 2))

    def dense_operator(self, nodes, edges, senders, receivers) -> Float[Array, "heads N N"]:
        """The matrices :math:`\\gamma A_h` as dense arrays (for inspection and tests)."""
        n = nodes.shape[0]
        coeffs, _ = self.transition(nodes, edges, senders, receivers)
        mats = jnp.zeros((self.heads, n, n), coeffs.dtype)
        mats = mats.at[:, receivers, senders].add(coeffs.T)
        return lax.stop_gradient(self.gamma) * mats

    def __call__(
        self,
        nodes: Float[Array, "N node_dim"],
        edges: Float[Array, "E edge_dim"],
        senders: Int[Array, " E"],
        receivers: Int[Array, " E"],
    ) -> tuple[Float[Array, "N out_dim"], Solution]:
        n = nodes.shape[0]
        coeffs, b = self.transition(nodes, edges, senders, receivers)
        gamma = lax.stop_gradient(self.gamma).astype(b.dtype)
        args = (coeffs, b, gamma, senders, receivers)
        where = "jaxsolve.implicit.ConvergentGraphSolver"
        sol = self._solve(where, _Residual(_transition, True), jnp.zeros_like(b), args)
        h = jnp.transpose(sol.value, (1, 0, 2)).reshape(n, self.heads * self.hidden)
        return jax.vmap(self.decoder)(h), sol
