"""Physics-informed learning: residuals of single-point networks, geometry, collocation
samplers, hard constraints and loss weighting.

A PDE problem is data: residual terms ``r(u, x)`` of a single-point network ``u(x)`` (``x = (t,
*space)`` for time-dependent problems), derivatives by forward-mode autodiff, conditions as terms,
geometry as signed distances; collocation samplers are state + ``step`` so resampling runs inside
a compiled training loop.

================================  ================================================================
file                              what it holds
================================  ================================================================
``_derivatives.py``               :func:`derivative`, :func:`gradient`, :func:`laplacian`, ...
``_jets.py``                      :func:`directional_jets` (:class:`Jets`), the batched Taylor
                                  rule of an :class:`AbstractJetFunction`
``_geometry.py``                  :class:`Interval`, :class:`Box`, :class:`Disk`,
                                  :class:`SpaceTime`, :class:`SignedDistance`
``_sampling.py``                  :func:`uniform`, :func:`halton`, :func:`sobol`,
                                  :func:`latin_hypercube`, :class:`RARD`, :class:`R3`
``_constraints.py``               :class:`HardDirichlet`, :class:`HardInitial`,
                                  :class:`PeriodicEmbedding`
``_networks.py``                  :class:`MLP`, :class:`FourierFeatures`, :class:`ModifiedMLP`,
                                  :class:`SIREN`, :class:`PhysicsInformedGaussians`
``_problems.py``                  :class:`Term`, :class:`PINNProblem`, condition builders and the
                                  benchmark problems (Burgers, convection, Allen-Cahn, ...)
``_weighting.py``                 :class:`CausalWeighting`, :func:`grad_norm_weighting`
``_lagrangian.py``                Lagrangian PINNs: :class:`LagrangianNetwork` (characteristic
                                  coordinates as inputs), :func:`lagrangian_convection`,
                                  :func:`lagrangian_burgers` (learned characteristics)
``_adversarial.py``               :class:`AdversarialSampler` (a flow-matching generative sampler)
``_operator_losses.py``          physics losses for neural operators on their output grid:
                                  :class:`BurgersPhysicsLoss`, :class:`DarcyPhysicsLoss`, ...
``_train.py``                     :func:`train` (the compiled training loop), :class:`Phase`,
                                  :class:`Collocation`, the update rules :class:`Optax` and
                                  :class:`GaussNewton`, :func:`relative_l2`
================================  ================================================================
"""

from ._adversarial import AdversarialSampler, FlowSamplerAux
from ._constraints import HardDirichlet, HardInitial, PeriodicEmbedding
from ._derivatives import (
    derivative,
    divergence,
    gradient,
    hessian,
    hessian_diag,
    jacobian,
    laplacian,
    time_derivative,
)
from ._geometry import AbstractGeometry, Box, Disk, Interval, SignedDistance, SpaceTime
from ._jets import AbstractJetFunction, Jets, directional_jets
from ._lagrangian import (
    CharacteristicModel,
    CharacteristicResidual,
    ConvectionDiffusionResidual,
    LagrangianBurgersResidual,
    LagrangianNetwork,
    LagrangianResidual,
    convection_diffusion_residual,
    eulerian_values,
    lagrangian_burgers,
    lagrangian_convection,
    lagrangian_residual,
)
from ._networks import MLP, SIREN, FourierFeatures, ModifiedMLP, PhysicsInformedGaussians
from ._operator_losses import (
    AbstractPhysicsLoss,
    BurgersPhysicsLoss,
    DarcyPhysicsLoss,
    EvolutionPhysicsLoss,
    KuramotoSivashinskyPhysicsLoss,
    NavierStokesPhysicsLoss,
)
from ._operator_losses import (
    time_derivative as grid_time_derivative,
)
from ._problems import (
    AbstractResidual,
    AllenCahnResidual,
    BurgersResidual,
    ConvectionResidual,
    Dirichlet,
    HeatResidual,
    Initial,
    Neumann,
    Periodic,
    PINNProblem,
    PoissonResidual,
    Term,
    allen_cahn,
    burgers,
    convection,
    dirichlet,
    heat,
    initial,
    neumann,
    periodic,
    poisson,
)
from ._sampling import (
    R3,
    RARD,
    AbstractAdaptiveSampler,
    SamplerState,
    UniformResampling,
    halton,
    latin_hypercube,
    sobol,
    uniform,
)
from ._train import (
    AbstractUpdate,
    Collocation,
    GaussNewton,
    Objective,
    Optax,
    Phase,
    PINNResult,
    TrainState,
    relative_l2,
    train,
)
from ._weighting import (
    CausalWeighting,
    GradNormState,
    GradNormWeighting,
    causal_weights,
    chunk_means,
    grad_norm_targets,
    grad_norm_weighting,
)

__all__ = [
    "MLP",
    "R3",
    "RARD",
    "SIREN",
    "AbstractAdaptiveSampler",
    "AbstractGeometry",
    "AbstractJetFunction",
    "AbstractPhysicsLoss",
    "AbstractResidual",
    "AbstractUpdate",
    "AdversarialSampler",
    "AllenCahnResidual",
    "Box",
    "BurgersPhysicsLoss",
    "BurgersResidual",
    "CausalWeighting",
    "CharacteristicModel",
    "CharacteristicResidual",
    "Collocation",
    "ConvectionDiffusionResidual",
    "ConvectionResidual",
    "DarcyPhysicsLoss",
    "Dirichlet",
    "Disk",
    "EvolutionPhysicsLoss",
    "FlowSamplerAux",
    "FourierFeatures",
    "GaussNewton",
    "GradNormState",
    "GradNormWeighting",
    "HardDirichlet",
    "HardInitial",
    "HeatResidual",
    "Initial",
    "Interval",
    "Jets",
    "KuramotoSivashinskyPhysicsLoss",
    "LagrangianBurgersResidual",
    "LagrangianNetwork",
    "LagrangianResidual",
    "ModifiedMLP",
    "NavierStokesPhysicsLoss",
    "Neumann",
    "Objective",
    "Optax",
    "PINNProblem",
    "PINNResult",
    "Periodic",
    "PeriodicEmbedding",
    "Phase",
    "PhysicsInformedGaussians",
    "PoissonResidual",
    "SamplerState",
    "SignedDistance",
    "SpaceTime",
    "Term",
    "TrainState",
    "UniformResampling",
    "allen_cahn",
    "burgers",
    "causal_weights",
    "chunk_means",
    "convection",
    "convection_diffusion_residual",
    "derivative",
    "directional_jets",
    "dirichlet",
    "divergence",
    "eulerian_values",
    "grad_norm_targets",
    "grad_norm_weighting",
    "gradient",
    "grid_time_derivative",
    "halton",
    "heat",
    "hessian",
    "hessian_diag",
    "initial",
    "jacobian",
    "lagrangian_burgers",
    "lagrangian_convection",
    "lagrangian_residual",
    "laplacian",
    "latin_hypercube",
    "neumann",
    "periodic",
    "poisson",
    "relative_l2",
    "sobol",
    "time_derivative",
    "train",
    "uniform",
]
