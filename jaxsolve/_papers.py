"""The seed papers and the jaxsolve names that implement them: the data behind ``docs/papers.md``.

jaxsolve grew from a list of seed papers (paper-list pages scraped into text; about a third of
them fall within its pillars). :data:`SEED_TITLES` holds every seed title, as the pages spell it
and in page order (``scripts/seed_papers.py`` extracts them); :data:`PAPERS` holds one
:class:`Paper` per title: its status, its pillar, the public names that implement it and a
one-line note saying what is implemented or why nothing is.

The documentation's seed-paper page is generated from this data (:func:`render_markdown`,
written by ``python scripts/gen_papers_page.py`` or ``python -m jaxsolve._papers``), so the page
cannot drift from the code: ``tests/test_papers.py`` checks that the committed page equals the
rendering, that every name imports and is public, and that every name's docstring (or that of the
module defining it, where jaxsolve writes a method family's maths and paper) names the paper by
its title or by one of the record's ``aliases`` (another published title of the same paper, or
the short title the docstring uses).

Statuses:

* ``"implemented"`` — the paper's method is in jaxsolve, under the listed names;
* ``"partly"`` — part of it is (the note says what is missing);
* ``"not implemented"`` — within a pillar, not built;
* ``"out of scope"`` — outside jaxsolve's pillars (the note names the field).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

STATUSES: tuple[str, ...] = ("implemented", "partly", "not implemented", "out of scope")

# Pillar key -> section heading on the page, in page order.
PILLARS: dict[str, str] = {
    "diffusion": "Diffusion and flow models",
    "operators": "Neural operators",
    "pinn": "Physics-informed learning",
    "implicit": "Implicit layers and solvers",
    "ode": "Neural differential equations",
    "other": "Outside jaxsolve's pillars",
}

_STATUS_HEADINGS = {
    "implemented": "Implemented",
    "partly": "Partly implemented",
    "not implemented": "Not implemented",
    "out of scope": "Out of scope",
}

# Characters that Markdown (or the page's MathJax) would read as markup inside a title or note.
_MARKDOWN_SPECIAL = "\\`*_[]<>|$"


@dataclasses.dataclass(frozen=True)
class Paper:
    """One seed paper and what jaxsolve does with it.

    Attributes:
        title: the title exactly as the seed page spells it (whitespace normalised).
        status: one of :data:`STATUSES`.
        pillar: a key of :data:`PILLARS`; ``"other"`` exactly when the status is
            ``"out of scope"``.
        names: the public names implementing it, as ``jaxsolve.<subpackage>.<Name>``; at least
            one for ``"implemented"`` and ``"partly"``, none otherwise.
        note: one line: what is implemented, or why nothing is.
        aliases: other strings that name this paper in docstrings (another published title, or
            a short title); the docstring check accepts them in place of ``title``.
    """

    title: str
    status: str
    pillar: str
    names: tuple[str, ...] = ()
    note: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.title, str) or self.title != " ".join(self.title.split()):
            raise ValueError(
                f"title: expected a string with normalised whitespace, got {self.title!r}"
            )
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        if self.pillar not in PILLARS:
            raise ValueError(f"pillar: expected one of {tuple(PILLARS)}, got {self.pillar!r}")
        if (self.pillar == "other") != (self.status == "out of scope"):
            raise ValueError(
                f"pillar: 'other' goes with status 'out of scope' and only with it; got "
                f"pillar={self.pillar!r}, status={self.status!r} for {self.title!r}"
            )
        if not isinstance(self.names, tuple) or not isinstance(self.aliases, tuple):
            raise TypeError(f"names, aliases: expected tuples for {self.title!r}")
        needs_names = self.status in ("implemented", "partly")
        if needs_names and not self.names:
            raise ValueError(f"names: a {self.status!r} paper needs a name: {self.title!r}")
        if not needs_names and self.names:
            raise ValueError(f"names: a {self.status!r} paper lists no names: {self.title!r}")
        for name in self.names:
            if not name.startswith("jaxsolve.") or name.count(".") < 2:
                raise ValueError(f"names: expected 'jaxsolve.<subpackage>.<Name>', got {name!r}")
        if not self.note or "\n" in self.note:
            raise ValueError(f"note: expected one non-empty line for {self.title!r}")


SEED_TITLES: tuple[str, ...] = (
    "FloydNet: A Learning Paradigm for Global Relational Reasoning",
    "DGNO: A Novel Physics-aware Neural Operator for Solving Forward and Inverse PDE Problems based on Deep, Generative Probabilistic Modeling",
    "Weighted least-squares approximation with determinantal point processes and generalized volume sampling",
    "AdjointDPM: Adjoint Sensitivity Method for Gradient Backpropagation of Diffusion Probabilistic Models",
    "Differentially Private SGD Without Clipping Bias: An Error-Feedback Approach",
    "Optimizing Return Distributions with Distributional Dynamic Programming",
    "Sparse Knowledge Distillation: A Mathematical Framework for Probability-Domain Temperature Scaling and Multi-Stage Compression",
    "Information-Theoretic Generalization Bounds for Deep Neural Networks",
    "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps",
    "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    "DSP-Reg: Domain-Sensitive Parameter Regularization for Robust Domain Generalization",
    "DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model Statistics",
    "Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning",
    "DualFast: Dual-Speedup Framework for Fast Sampling of Diffusion Models",
    "Efficiently Computing Similarities to Private Datasets",
    "Solving High Frequency and Multi-Scale PDEs with Gaussian Processes",
    "Learning Physical Models that Can Respect Conservation Laws",
    "ADOP: Approximate Differentiable One-Pixel Point Rendering",
    "LeMON: Learning to Learn Multi-Operator Networks",
    "MgNO: Efficient Parameterization of Linear Operators via Multigrid",
    "GDPO-SR: Group Direct Preference Optimization for One-Step Generative Image Super-Resolution",
    "DeepONet: Learning nonlinear operators for identifying differential equations based on the universal approximation theorem of operators",
    "Generalizing the Convolution Operator in Convolutional Neural Networks",
    "Poseidon: Efficient Foundation Models for PDEs",
    "Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked Preferences",
    "DA-DPO: Cost-efficient Difficulty-aware Preference Optimization for Reducing MLLM Hallucinations",
    "Provable General Function Class Representation Learning in Multitask Bandits and MDPs",
    "Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge Refinement",
    "DIFF2: Differential Private Optimization via Gradient Differences for Nonconvex Distributed Learning",
    "GENIE: Higher-Order Denoising Diffusion Solvers",
    "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via Dynamic Compensation",
    "Discrete Optimization of Min-Max Violation and its Applications Across Computational Sciences",
    "HyPINO: Multi-Physics Neural Operators via HyperPINNs and the Method of Manufactured Solutions",
    "Improving Single-Image Defocus Deblurring: How Dual-Pixel Images Help Through Multi-Task Learning",
    "DPM-OT: A New Diffusion Probabilistic Model Based on Optimal Transport",
    "LordNet: An Efficient Neural Network for Learning to Solve Parametric Partial Differential Equations without Simulated Data",
    "SoMA: Singular Value Decomposed Minor Components Adaptation for Domain Generalizable Representation Learning",
    "Ground State Preparation via Dynamical Cooling",
    "A theory of representation learning gives a deep generalisation of kernel methods",
    "Learn to Preserve and Diversify: Parameter-Efficient Group with Orthogonal Regularization for Domain Generalization",
    "Direct Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly a GAN Discriminator",
    "Operator Learning Using Weak Supervision from Walk-on-Spheres",
    "Rayleigh Quotient Graph Neural Networks for Graph-level Anomaly Detection",
    "On the Provable Advantage of Unsupervised Pretraining",
    "Transform Once: Efficient Operator Learning in Frequency Domain",
    "Learning Hierarchical Polynomials with Three-Layer Neural Networks",
    "More is Better in Modern Machine Learning: when Infinite Overparameterization is Optimal and Overfitting is Obligatory",
    "An Efficient Tester-Learner for Halfspaces",
    "h-calibration: Rethinking Classifier Recalibration with Probabilistic Error-Bounded Objective",
    "Parallel Learning by Multitasking Neural Networks",
    "The Universality Lens: Why Even Highly Over-Parametrized Models Learn Well",
    "Unifying Self-Supervised Clustering and Energy-Based Models",
    "The Unreasonable Effectiveness of Gaussian Score Approximation for Diffusion Models and its Applications",
    "Kolmogorov-Arnold Attention: Is Learnable Attention Better For Vision Transformers?",
    "Dale meets Langevin: A Multiplicative Denoising Diffusion Model",
    "Neural Network-Based Score Estimation in Diffusion Models: Optimization and Generalization",
    "Revisiting Discriminative vs. Generative Classifiers: Theory and Implications",
    "Score Forgetting Distillation: A Swift, Data-Free Method for Machine Unlearning in Diffusion Models",
    "Similarity-Distance-Magnitude Universal Verification",
    "One-step Diffusion Models with f-Divergence Distribution Matching",
    "A Deep Conjugate Direction Method for Iteratively Solving Linear Systems",
    "Geographic Location Encoding with Spherical Harmonics and Sinusoidal Representation Networks",
    "I Can't Believe It's Not Real: CV-MuSeNet: Complex-Valued Multi-Signal Segmentation",
    "Understanding Hessian Alignment for Domain Generalization",
    "Generalization in diffusion models arises from geometry-adaptive harmonic representations",
    "Solving High-Dimensional PDEs with Latent Spectral Models",
    "Lagrangian PINNs: A causality-conforming solution to failure modes of physics-informed neural networks",
    "One Step of Gradient Descent is Provably the Optimal In-Context Learner with One Layer of Linear Self-Attention",
    "NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
    "How Powerful are Shallow Neural Networks with Bandlimited Random Weights?",
    "OLinear: A Linear Model for Time Series Forecasting in Orthogonally Transformed Domain",
    "Diff-Instruct*: Towards Human-Preferred One-step Text-to-image Generative Models",
    "What Regularized Auto-Encoders Learn from the Data Generating Distribution",
    "NeuRBF: A Neural Fields Representation with Adaptive Radial Basis Functions",
    "Random Teachers are Good Teachers",
    "Magnitude Invariant Parametrizations Improve Hypernetwork Learning",
    "Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training",
    "Diffusion Models Beat GANs on Image Classification",
    "One-Step Diffusion Distillation through Score Implicit Matching",
    "Spectral Bottleneck in Deep Neural Networks: Noise is All You Need",
    "What can a Single Attention Layer Learn? A Study Through the Random Features Lens",
    "EigenShield: Causal Subspace Filtering via Random Matrix Theory for Adversarially Robust Vision-Language Models",
    "When Do Curricula Work in Federated Learning?",
    "Learning Unnormalized Statistical Models via Compositional Optimization",
    "Kolmogorov-Arnold Neural Networks for High-Entropy Alloys Design",
    "Denoising Task Difficulty-based Curriculum for Training Diffusion Models",
    "Optimal Weighted Convolution for Classification and Denosing",
    "OVOR: OnePrompt with Virtual Outlier Regularization for Rehearsal-Free Class-Incremental Learning",
    "Learning Multiple-Scattering Solutions for Sphere-Tracing of Volumetric Subsurface Effects",
    "DeiT-LT Distillation Strikes Back for Vision Transformer Training on Long-Tailed Datasets",
    "Improving Multimodal Learning via Imbalanced Learning",
    "FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data",
    "PROSE: Predicting Operators and Symbolic Expressions using Multimodal Transformers",
    "Spectral-Refiner: Fine-Tuning of Accurate Spatiotemporal Neural Operator for Turbulent Flows",
    "Robustifying State-space Models for Long Sequences via Approximate Diagonalization",
    "Singular Value Decomposition on Kronecker Adaptation for Large Language Model",
    "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank Adaptation",
    "DiffSpectra: Molecular Structure Elucidation from Spectra using Diffusion Models",
    "Representation Alignment for Generation: Training Diffusion Transformers Is Easier Than You Think",
    "Towards Exact Computation of Inductive Bias",
    "No Fear of Heterogeneity: Classifier Calibration for Federated Learning with Non-IID Data",
    "Diffusion Probabilistic Model Made Slim",
    "Multi-Grid Tensorized Fourier Neural Operator for High-Resolution PDEs",
    "Oscillation-free Quantization for Low-bit Vision Transformers",
    "Accurate Computation of the Logarithm of Modified Bessel Functions on GPUs",
    "Probing then Editing Response Personality of Large Language Models",
    "Perturbation Analysis of Neural Collapse",
    "Robust Representation Consistency Model via Contrastive Denoising",
    "Existence, Stability and Scalability of Orthogonal Convolutional Neural Networks",
    "Locally Regularized Neural Differential Equations: Some Black Boxes Were Meant to Remain Closed!",
    "Automatic Perturbation Analysis for Scalable Certified Robustness and Beyond",
    "A likelihood approach to nonparametric estimation of a singular distribution using deep generative models",
    "Adversarial Style Augmentation for Domain Generalization",
    "Towards scalable surrogate models based on Neural Fields for large scale aerodynamic simulations",
    "On Penalty Methods for Nonconvex Bilevel Optimization and First-Order Stochastic Approximation",
    "PDE-Refiner: Achieving Accurate Long Rollouts with Neural PDE Solvers",
    "Beyond First-Order Tweedie: Solving Inverse Problems using Latent Diffusion",
    "Training Deep Surrogate Models with Large Scale Online Learning",
    "Generalizable Data-free Objective for Crafting Universal Adversarial Perturbations",
    "Adversarial Adaptive Sampling: Unify PINN and Optimal Transport for the Approximation of PDEs",
    "Sound propagation in realistic interactive 3D scenes with parameterized sources using deep neural operators",
    "Random Sub-Samples Generation for Self-Supervised Real Image Denoising",
    "Uncertainty-guided Perturbation for Image Super-Resolution Diffusion Model",
    "PIG: Physics-Informed Gaussians as Adaptive Parametric Mesh Representations",
    "Exact Diffusion Inversion via Bi-directional Integration Approximation",
    "A Unified Framework for Forward and Inverse Problems in Subsurface Imaging using Latent Space Translations",
    "Implicit Neural Spatial Representations for Time-dependent PDEs",
    "Uncertainty quantification in a mechanical submodel driven by a Wasserstein-GAN",
    "EquiNO: A Physics-Informed Neural Operator for Multiscale Simulations",
    "Random Grid Neural Processes for Parametric Partial Differential Equations",
    "Stochastic Interpolants: A Unifying Framework for Flows and Diffusions",
    "Constrained Bi-Level Optimization: Proximal Lagrangian Value function Approach and Hessian-free Algorithm",
    "Opening the Blackbox: Accelerating Neural Differential Equations by Regularizing Internal Solver Heuristics",
    "Meta Learning of Interface Conditions for Multi-Domain Physics-Informed Neural Networks",
    "Backpropagation-free Training of Deep Physical Neural Networks",
    "NeuralStagger: Accelerating Physics-constrained Neural PDE Solver with Spatial-temporal Decomposition",
    "Dense Hebbian neural networks: a replica symmetric picture of supervised learning",
    "A Unified Module for Accelerating STABLE-DIFFUSION: LCM-LORA",
    "The Principles of Deep Learning Theory",
    "Learning Semilinear Neural Operators : A Unified Recursive Framework For Prediction And Data Assimilation",
    "Neural Network Approximations of PDEs Beyond Linearity: A Representational Perspective",
    "Diffusion Sampling with Momentum for Mitigating Divergence Artifacts",
    "Physics-informed cluster analysis and a priori efficiency criterion for the construction of local reduced-order bases",
    "HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural Networks",
    "An efficient Asymptotic-Preserving scheme for the Boltzmann mixture with disparate mass",
    "ExposureDiffusion: Learning to Expose for Low-light Image Enhancement",
    "Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of View",
    "Rethinking Architecture Selection in Differentiable NAS",
    "SineNet: Learning Temporal Dynamics in Time-Dependent Partial Differential Equations",
    "A Variational Perspective on Solving Inverse Problems with Diffusion Models",
    "Variational Inference for SDEs Driven by Fractional Noise",
    "LESnets (Large-Eddy Simulation nets): Physics-informed neural operator for large-eddy simulation of turbulence",
    "Augmenting Hessians with Inter-Layer Dependencies for Mixed-Precision Post-Training Quantization",
    "All You Need is RAW: Defending Against Adversarial Attacks with Camera Image Pipelines",
    "A Simple Approach to Unifying Diffusion-based Conditional Generation",
    "The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent",
    "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance",
    "One is All: Bridging the Gap Between Neural Radiance Fields Architectures with Progressive Volume Distillation",
    "Learning Neural PDE Solvers with Parameter-Guided Channel Attention",
    "Restart Sampling for Improving Generative Processes",
    "Q-VLM: Post-training Quantization for Large Vision-Language Models",
    "AdaFlow: Imitation Learning with Variance-Adaptive Flow-Based Policies",
    "Gaussian Mixture Flow Matching Models",
    "Efficient Speech Language Modeling via Energy Distance in Continuous Latent Space",
    "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models",
    "Learnable Sampler Distillation for Discrete Diffusion Models",
    "Revisiting the Effects of Stochasticity for Hamiltonian Samplers",
    "Decoupled MeanFlow: Turning Flow Models into Flow Maps for Accelerated Sampling",
    "FlamePINN-1D: Physics-informed neural networks to solve forward and inverse problems of 1D laminar flames",
    "Fast Sampling of Diffusion Models with Exponential Integrator",
    "Dual Diffusion Implicit Bridges for Image-to-Image Translation",
    "Generalization Error Analysis for Selective State-Space Models Through the Lens of Attention",
    "PhysiX: A Foundation Model for Physics Simulations",
    "MotionStreamer: Streaming Motion Generation via Diffusion-based Autoregressive Model in Causal Latent Space",
    "Langevin Monte Carlo for strongly log-concave distributions: Randomized midpoint revisited",
    "Optimal Stepsize for Diffusion Sampling",
    "Efficient Quantum Algorithms for Quantum Optimal Control",
    "X-Omni: Reinforcement Learning Makes Discrete Autoregressive Image Generative Models Great Again",
    "DQS3D: Densely-matched Quantization-aware Semi-supervised 3D Detection",
    "Generative Regression Based Watch Time Prediction for Short-Video Recommendation",
    "Uncertainty quantification for stationary and time-dependent PDEs subject to Gevrey regular random domain deformations",
    "Accurate and efficient evaluation of the a posteriori error estimator in the reduced basis method",
    "Accurate a posteriori error evaluation in the reduced basis method",
    "Better Neural PDE Solvers Through Data-Free Mesh Movers",
    "Optimally truncated WKB approximation for the highly oscillatory stationary 1D Schrödinger equation",
    "Improved Analysis of Score-based Generative Modeling: User-Friendly Bounds under Minimal Smoothness Assumptions",
    "Mind the Gap: Removing the Discretization Gap in Differentiable Logic Gate Networks",
    "Neural Operator: Is data all you need to model the world? An insight into the impact of Physics Informed Machine Learning",
    "Operator Learning with Neural Fields: Tackling PDEs on General Geometries",
    "Mesh-robust stability and convergence of variable-step deferred correction methods based on the BDF2 formula",
    "On Error Propagation of Diffusion Models",
    "Proper losses for discrete generative models",
    "DiscQuant: A Quantization Method for Neural Networks Inspired by Discrepancy Theory",
    "Interpretable structural model error discovery from sparse assimilation increments using spectral bias-reduced neural networks: A quasi-geostrophic turbulence test case",
    "High-dimensional dynamics of generalization error in neural networks",
    "Discrete Total Variation with Finite Elements and Applications to Imaging",
    "LEMMA: Learning from Errors for MatheMatical Advancement in LLMs",
    "Optimal Control of Coefficients in Parabolic Free Boundary Problems Modeling Laser Ablation",
    "General Covariance Data Augmentation for Neural PDE Solvers",
    "Discovery of interpretable structural model errors by combining Bayesian sparse regression and data assimilation: A chaotic Kuramoto-Sivashinsky test case",
    "Nonintrusive approximation of parametrized limits of matrix power algorithms -- application to matrix inverses and log-determinants",
    "Closed-Form Diffusion Models",
    "Fantastic Generalization Measures are Nowhere to be Found",
    "EControl: Fast Distributed Optimization with Compression and Error Control",
    "Minimizing Trajectory Curvature of ODE-based Generative Models",
    "A Note on Shumailov et al. (2024): `AI Models Collapse When Trained on Recursively Generated Data'",
    "LADDER: Language Driven Slice Discovery and Error Rectification",
    "A domain splitting strategy for solving PDEs",
    "Message Passing Neural PDE Solvers",
    "Generalization Bounds for Magnitude-Based Pruning via Sparse Matrix Sketching",
    "Generalization error of spectral algorithms",
    "Generalized Denoising Auto-Encoders as Generative Models",
    "On Neural Differential Equations",
    "Neural Operator: Learning Maps Between Function Spaces",
    "Exploration of Numerical Precision in Deep Neural Networks",
    "Improving Diffusion Models for Inverse Problems using Manifold Constraints",
    "Learning to Reject with a Fixed Predictor: Application to Decontextualization",
    "Performance analysis of Volna-OP2 -- massively parallel code for tsunami modelling",
    "Real-Time Prediction of Gas Flow Dynamics in Diesel Engines using a Deep Neural Operator Framework",
    "Understanding Gradient Regularization in Deep Learning: Efficient Finite-Difference Computation and Implicit Bias",
    "Partial Differential Equations is All You Need for Generating Neural Architectures -- A Theory for Physical Artificial Intelligence Systems",
    "Matrix Product Sketching via Coordinated Sampling",
    "An operator preconditioning perspective on training in physics-informed machine learning",
    "Learning Nonlinear Responses in PET Bottle Buckling with a Hybrid DeepONet-Transolver Framework",
    "Mitigating Propagation Failures in Physics-informed Neural Networks using Retain-Resample-Release (R3) Sampling",
    "Toward INT4 Fixed-Point Training via Exploring Quantization Error for Gradients",
    "Multiscale Neural Operator: Learning Fast and Grid-independent PDE Solvers",
    "Chinchilla Scaling: A replication attempt",
    "Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate Categorical Sampling",
    "On the saddle point problem for non-convex optimization",
    "Addressing Function Approximation Error in Actor-Critic Methods",
    "Algorithmic Stability of Heavy-Tailed SGD with General Loss Functions",
    "Generative Adversarial Networks",
    "Error Feedback Reloaded: From Quadratic to Arithmetic Mean of Smoothness Constants",
    "Implicit regularization of deep residual networks towards neural ODEs",
    "Showing Your Work Doesn't Always Work",
    "Light Schrödinger Bridge",
    "Consistent3D: Towards Consistent High-Fidelity Text-to-3D Generation with Deterministic Sampling Prior",
    "Balancing Computational Efficiency and Forecast Error in Machine Learning-based Time-Series Forecasting: Insights from Live Experiments on Meteorological Nowcasting",
    "Input Perturbation Reduces Exposure Bias in Diffusion Models",
    "Adversarial Classification: Necessary conditions and geometric flows",
    "Uncertainty quantification for industrial design using dictionaries of reduced order models",
    "Intriguing Properties of Adversarial Examples",
    "Sketched Ridgeless Linear Regression: The Role of Downsampling",
    "sharpDARTS: Faster and More Accurate Differentiable Architecture Search",
    "Scaling physics-informed hard constraints with mixture-of-experts",
    "On the Importance of Gradient Norm in PAC-Bayesian Bounds",
    "The Value of Out-of-Distribution Data",
    "NUNO: A General Framework for Learning Parametric PDEs with Non-Uniform Data",
    "Learning the Dynamics of Sparsely Observed Interacting Systems",
    "Concentration of Measure for Distributions Generated via Diffusion Models",
    "Generative Sliced MMD Flows with Riesz Kernels",
    "A Survey of Quantization Methods for Efficient Neural Network Inference",
    "Estimation of Non-Crossing Quantile Regression Process with Deep ReQU Neural Networks",
    "Text2PDE: Latent Diffusion Models for Accessible Physics Simulation",
    "Data augmentation and feature selection for automatic model recommendation in computational physics",
    "GRAND: Graph Neural Diffusion",
    "CFDBench: A Large-Scale Benchmark for Machine Learning Methods in Fluid Dynamics",
    "PFGM++: Unlocking the Potential of Physics-Inspired Generative Models",
    "DARTS+: Improved Differentiable Architecture Search with Early Stopping",
    "Effectively Unbiased FID and Inception Score and where to find them",
    "Error Classification of Large Language Models on Math Word Problems: A Dynamically Adaptive Framework",
    "Detecting Errors in a Numerical Response via any Regression Model",
    "Bridging Discrete and Backpropagation: Straight-Through and Beyond",
    "SGD Implicitly Regularizes Generalization Error",
    "Gradients are Not All You Need",
    "The Optimality of Kernel Classifiers in Sobolev Space",
    "Forward Learning of Graph Neural Networks",
    "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow",
    "Convergent Graph Solvers",
    "Score-Based Generative Modeling through Stochastic Differential Equations",
    "Toward smart composites: small-scale, untethered prediction and control for soft sensor/actuator systems",
    "diffGrad: An Optimization Method for Convolutional Neural Networks",
    "Efficient and Modular Implicit Differentiation",
    "ODICE: Revealing the Mystery of Distribution Correction Estimation via Orthogonal-gradient Update",
    "Improving the Training of Rectified Flows",
    "Learning Neural Constitutive Laws From Motion Observations for Generalizable PDE Dynamics",
    "What's in a Prior? Learned Proximal Networks for Inverse Problems",
    "MRS: A Fast Sampler for Mean Reverting Diffusion based on ODE and SDE Solvers",
    "BiPer: Binary Neural Networks using a Periodic Function",
    "Derivative-Free Guidance in Continuous and Discrete Diffusion Models with Soft Value-Based Decoding",
    "Stochastic Policy Gradient Methods: Improved Sample Complexity for Fisher-non-degenerate Policies",
    "Improving equilibrium propagation without weight symmetry through Jacobian homeostasis",
    "Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow",
    "Policy Evaluation and Temporal-Difference Learning in Continuous Time and Space: A Martingale Approach",
    "The Monge Gap: A Regularizer to Learn All Transport Maps",
    "RARTS: An Efficient First-Order Relaxed Architecture Search Method",
    "Bilevel Optimization under Unbounded Smoothness: A New Algorithm and Convergence Analysis",
    "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
    "How Over-Parameterization Slows Down Gradient Descent in Matrix Sensing: The Curses of Symmetry and Initialization",
    "Bidirectional Learning for Offline Model-based Biological Sequence Design",
    "Generating Private Synthetic Data with Genetic Algorithms",
    "Neural Tangent Kernel: Convergence and Generalization in Neural Networks",
    "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps",
)

PAPERS: tuple[Paper, ...] = (
    Paper(
        "FloydNet: A Learning Paradigm for Global Relational Reasoning",
        "out of scope",
        "other",
        note="graph reasoning architecture (all-pairs dynamic programming on graphs)",
    ),
    Paper(
        "DGNO: A Novel Physics-aware Neural Operator for Solving Forward and Inverse PDE Problems based on Deep, Generative Probabilistic Modeling",
        "partly",
        "operators",
        names=("jaxsolve.operators.MultiONet",),
        note="MultiONet, the paper's operator network, is built; the generative latent-variable model and its weak-form physics loss are not",
        aliases=(
            "a novel physics-aware neural operator for solving forward and inverse PDE problems based on deep, generative probabilistic modeling",
        ),
    ),
    Paper(
        "Weighted least-squares approximation with determinantal point processes and generalized volume sampling",
        "out of scope",
        "other",
        note="approximation theory (weighted least squares with determinantal point processes)",
    ),
    Paper(
        "AdjointDPM: Adjoint Sensitivity Method for Gradient Backpropagation of Diffusion Probabilistic Models",
        "implemented",
        "diffusion",
        names=("jaxsolve.diffusion.AdjointDPM",),
        note="the continuous adjoint of the probability-flow ODE in exponential-integrator variables, as sample(adjoint=...)",
    ),
    Paper(
        "Differentially Private SGD Without Clipping Bias: An Error-Feedback Approach",
        "out of scope",
        "other",
        note="differential privacy (clipped SGD)",
    ),
    Paper(
        "Optimizing Return Distributions with Distributional Dynamic Programming",
        "out of scope",
        "other",
        note="reinforcement learning (distributional dynamic programming)",
    ),
    Paper(
        "Sparse Knowledge Distillation: A Mathematical Framework for Probability-Domain Temperature Scaling and Multi-Stage Compression",
        "out of scope",
        "other",
        note="knowledge distillation theory for classifiers",
    ),
    Paper(
        "Information-Theoretic Generalization Bounds for Deep Neural Networks",
        "out of scope",
        "other",
        note="learning theory (generalisation bounds)",
    ),
    Paper(
        "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.DPMSolver",
            "jaxsolve.diffusion.DPMAdaptive",
            "jaxsolve.diffusion.DPMFast",
            "jaxsolve.diffusion.dpm_fast_orders",
            "jaxsolve.diffusion.dpm_fast_sigmas",
            "jaxsolve.diffusion.logsnr_sigmas",
        ),
        note="DPM-Solver-1/2/3 (singlestep and multistep), the adaptive DPM-Solver-12/23, DPM-Solver-fast and its log-SNR time steps",
        aliases=("DPM-Solver paper",),
    ),
    Paper(
        "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.DPMSolverPP",
            "jaxsolve.diffusion.DPMSolverPPSDE",
            "jaxsolve.diffusion.DPMSolverSDE",
            "jaxsolve.diffusion.DPMSolverPP2SAncestral",
            "jaxsolve.diffusion.DPMSolverPPSDE2S",
            "jaxsolve.diffusion.DPMSolverPP3MSDEKDiffusion",
        ),
        note="DPM-Solver++ 2S/3S/2M/3M, its SDE variants and k-diffusion's DPM-Solver++ samplers",
    ),
    Paper(
        "DSP-Reg: Domain-Sensitive Parameter Regularization for Robust Domain Generalization",
        "out of scope",
        "other",
        note="domain generalisation for classifiers",
    ),
    Paper(
        "DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model Statistics",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.DPMSolverV3",
            "jaxsolve.diffusion.EMS",
            "jaxsolve.diffusion.estimate_ems",
        ),
        note="the multistep predictor-corrector with empirical model statistics, and their estimation from data",
    ),
    Paper(
        "Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning",
        "not implemented",
        "operators",
        note="the recipe for turning standard architectures into neural operators; the converted architectures it proposes are not built",
    ),
    Paper(
        "DualFast: Dual-Speedup Framework for Fast Sampling of Diffusion Models",
        "implemented",
        "diffusion",
        names=("jaxsolve.diffusion.DualFast",),
        note="approximation-error compensation wrapped around any solver",
    ),
    Paper(
        "Efficiently Computing Similarities to Private Datasets",
        "out of scope",
        "other",
        note="differential privacy (similarity search on private data)",
    ),
    Paper(
        "Solving High Frequency and Multi-Scale PDEs with Gaussian Processes",
        "not implemented",
        "pinn",
        note="Gaussian-process PDE solvers are not built (jaxsolve solves PDEs with networks and spectral methods)",
    ),
    Paper(
        "Learning Physical Models that Can Respect Conservation Laws",
        "not implemented",
        "operators",
        note="conservation-law constraints on probabilistic operator outputs (ProbConserv) are not built",
    ),
    Paper(
        "ADOP: Approximate Differentiable One-Pixel Point Rendering",
        "out of scope",
        "other",
        note="differentiable rendering of point clouds",
    ),
    Paper(
        "LeMON: Learning to Learn Multi-Operator Networks",
        "not implemented",
        "operators",
        note="meta-learned multi-operator networks are not built",
    ),
    Paper(
        "MgNO: Efficient Parameterization of Linear Operators via Multigrid",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.MgNO",
            "jaxsolve.operators.MgNOBlock",
            "jaxsolve.operators.VCycle",
            "jaxsolve.operators.level_shapes",
        ),
        note="the multigrid neural operator: layers with learned V-cycle stencils",
    ),
    Paper(
        "GDPO-SR: Group Direct Preference Optimization for One-Step Generative Image Super-Resolution",
        "out of scope",
        "other",
        note="preference optimisation for one-step image super-resolution",
    ),
    Paper(
        "DeepONet: Learning nonlinear operators for identifying differential equations based on the universal approximation theorem of operators",
        "implemented",
        "operators",
        names=("jaxsolve.operators.DeepONet",),
        note="the unstacked branch/trunk DeepONet evaluated at arbitrary query points",
        aliases=(
            "Learning nonlinear operators via DeepONet based on the universal approximation theorem of operators",
        ),
    ),
    Paper(
        "Generalizing the Convolution Operator in Convolutional Neural Networks",
        "out of scope",
        "other",
        note="convolutional network design for images",
    ),
    Paper(
        "Poseidon: Efficient Foundation Models for PDEs",
        "not implemented",
        "operators",
        note="a pretrained foundation model (scalable operator transformer); needs large-scale pretraining and its weights",
    ),
    Paper(
        "Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked Preferences",
        "out of scope",
        "other",
        note="LLM alignment (preference optimisation)",
    ),
    Paper(
        "DA-DPO: Cost-efficient Difficulty-aware Preference Optimization for Reducing MLLM Hallucinations",
        "out of scope",
        "other",
        note="multimodal LLM alignment (preference optimisation)",
    ),
    Paper(
        "Provable General Function Class Representation Learning in Multitask Bandits and MDPs",
        "out of scope",
        "other",
        note="learning theory (multitask bandits and MDPs)",
    ),
    Paper(
        "Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge Refinement",
        "out of scope",
        "other",
        note="knowledge distillation theory",
    ),
    Paper(
        "DIFF2: Differential Private Optimization via Gradient Differences for Nonconvex Distributed Learning",
        "out of scope",
        "other",
        note="differentially private distributed optimisation",
    ),
    Paper(
        "GENIE: Higher-Order Denoising Diffusion Solvers",
        "partly",
        "diffusion",
        names=("jaxsolve.diffusion.GENIE",),
        note="the second-order truncated Taylor sampler with the derivative computed exactly by a JVP; the distilled derivative head is not built",
    ),
    Paper(
        "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via Dynamic Compensation",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.DCSolver",
            "jaxsolve.diffusion.fit_dc_ratios",
            "jaxsolve.diffusion.reference_states",
            "jaxsolve.diffusion.CascadeRatioRegression",
        ),
        note="UniPC with dynamic compensation, the ratio fitting against a reference and the cascade regression",
    ),
    Paper(
        "Discrete Optimization of Min-Max Violation and its Applications Across Computational Sciences",
        "out of scope",
        "other",
        note="combinatorial optimisation (min-max violation)",
    ),
    Paper(
        "HyPINO: Multi-Physics Neural Operators via HyperPINNs and the Method of Manufactured Solutions",
        "not implemented",
        "pinn",
        note="hypernetwork PINN operators trained on manufactured solutions are not built",
    ),
    Paper(
        "Improving Single-Image Defocus Deblurring: How Dual-Pixel Images Help Through Multi-Task Learning",
        "out of scope",
        "other",
        note="image deblurring with dual-pixel cameras",
    ),
    Paper(
        "DPM-OT: A New Diffusion Probabilistic Model Based on Optimal Transport",
        "not implemented",
        "diffusion",
        note="optimal-transport trajectories for diffusion models are not built",
    ),
    Paper(
        "LordNet: An Efficient Neural Network for Learning to Solve Parametric Partial Differential Equations without Simulated Data",
        "partly",
        "pinn",
        names=(
            "jaxsolve.pinn.AbstractPhysicsLoss",
            "jaxsolve.pinn.BurgersPhysicsLoss",
            "jaxsolve.pinn.DarcyPhysicsLoss",
            "jaxsolve.pinn.EvolutionPhysicsLoss",
            "jaxsolve.pinn.KuramotoSivashinskyPhysicsLoss",
            "jaxsolve.pinn.NavierStokesPhysicsLoss",
        ),
        note="the simulation-free residual loss on an operator's output grid; the LordNet architecture (low-rank mixing) is not built",
    ),
    Paper(
        "SoMA: Singular Value Decomposed Minor Components Adaptation for Domain Generalizable Representation Learning",
        "out of scope",
        "other",
        note="parameter-efficient fine-tuning for domain generalisation",
    ),
    Paper(
        "Ground State Preparation via Dynamical Cooling",
        "out of scope",
        "other",
        note="quantum state preparation",
    ),
    Paper(
        "A theory of representation learning gives a deep generalisation of kernel methods",
        "out of scope",
        "other",
        note="learning theory (kernel methods and representation learning)",
    ),
    Paper(
        "Learn to Preserve and Diversify: Parameter-Efficient Group with Orthogonal Regularization for Domain Generalization",
        "out of scope",
        "other",
        note="parameter-efficient fine-tuning for domain generalisation",
    ),
    Paper(
        "Direct Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly a GAN Discriminator",
        "not implemented",
        "diffusion",
        note="GAN-style fine-tuning of likelihood-based image generators is not built",
    ),
    Paper(
        "Operator Learning Using Weak Supervision from Walk-on-Spheres",
        "not implemented",
        "operators",
        note="weak supervision from walk-on-spheres Monte Carlo estimates is not built",
    ),
    Paper(
        "Rayleigh Quotient Graph Neural Networks for Graph-level Anomaly Detection",
        "out of scope",
        "other",
        note="graph anomaly detection",
    ),
    Paper(
        "On the Provable Advantage of Unsupervised Pretraining",
        "out of scope",
        "other",
        note="learning theory (unsupervised pretraining)",
    ),
    Paper(
        "Transform Once: Efficient Operator Learning in Frequency Domain",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.T1",
            "jaxsolve.operators.T1Layer",
        ),
        note="the Transform-Once operator: one transform in, frequency-domain layers, one transform out",
    ),
    Paper(
        "Learning Hierarchical Polynomials with Three-Layer Neural Networks",
        "out of scope",
        "other",
        note="learning theory (hierarchical polynomials)",
    ),
    Paper(
        "More is Better in Modern Machine Learning: when Infinite Overparameterization is Optimal and Overfitting is Obligatory",
        "out of scope",
        "other",
        note="learning theory (overparameterisation)",
    ),
    Paper(
        "An Efficient Tester-Learner for Halfspaces",
        "out of scope",
        "other",
        note="learning theory (testable learning of halfspaces)",
    ),
    Paper(
        "h-calibration: Rethinking Classifier Recalibration with Probabilistic Error-Bounded Objective",
        "out of scope",
        "other",
        note="classifier calibration",
    ),
    Paper(
        "Parallel Learning by Multitasking Neural Networks",
        "out of scope",
        "other",
        note="statistical physics of associative memories",
    ),
    Paper(
        "The Universality Lens: Why Even Highly Over-Parametrized Models Learn Well",
        "out of scope",
        "other",
        note="learning theory (overparameterised models)",
    ),
    Paper(
        "Unifying Self-Supervised Clustering and Energy-Based Models",
        "out of scope",
        "other",
        note="self-supervised clustering and energy-based models",
    ),
    Paper(
        "The Unreasonable Effectiveness of Gaussian Score Approximation for Diffusion Models and its Applications",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.Teleport",
            "jaxsolve.diffusion.teleport_sigmas",
            "jaxsolve.diffusion.gaussian_approximation",
        ),
        note="analytical teleportation: the first steps replaced by the exact Gaussian-approximation map",
    ),
    Paper(
        "Kolmogorov-Arnold Attention: Is Learnable Attention Better For Vision Transformers?",
        "out of scope",
        "other",
        note="attention for vision transformers",
    ),
    Paper(
        "Dale meets Langevin: A Multiplicative Denoising Diffusion Model",
        "not implemented",
        "diffusion",
        note="multiplicative (geometric Brownian) denoising diffusion is not built",
    ),
    Paper(
        "Neural Network-Based Score Estimation in Diffusion Models: Optimization and Generalization",
        "out of scope",
        "other",
        note="learning theory (score estimation by neural networks)",
    ),
    Paper(
        "Revisiting Discriminative vs. Generative Classifiers: Theory and Implications",
        "out of scope",
        "other",
        note="learning theory (discriminative and generative classifiers)",
    ),
    Paper(
        "Score Forgetting Distillation: A Swift, Data-Free Method for Machine Unlearning in Diffusion Models",
        "out of scope",
        "other",
        note="machine unlearning in diffusion models",
    ),
    Paper(
        "Similarity-Distance-Magnitude Universal Verification",
        "out of scope",
        "other",
        note="uncertainty estimation for LLM classifiers",
    ),
    Paper(
        "One-step Diffusion Models with f-Divergence Distribution Matching",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.fewstep.divergence_weight",
            "jaxsolve.diffusion.fewstep.dmd_generator_loss",
            "jaxsolve.diffusion.fewstep.dmd_fake_score_loss",
            "jaxsolve.diffusion.fewstep.dmd_step",
        ),
        note="distribution matching with any f-divergence weight h(r) = r^2 f''(r), beside DMD's reverse KL",
    ),
    Paper(
        "A Deep Conjugate Direction Method for Iteratively Solving Linear Systems",
        "implemented",
        "implicit",
        names=(
            "jaxsolve.implicit.DCDM",
            "jaxsolve.implicit.DirectionNet",
            "jaxsolve.implicit.dcdm_loss",
        ),
        note="the learned conjugate-direction solver, its direction network and its training loss",
    ),
    Paper(
        "Geographic Location Encoding with Spherical Harmonics and Sinusoidal Representation Networks",
        "out of scope",
        "other",
        note="geographic location encoding",
    ),
    Paper(
        "I Can't Believe It's Not Real: CV-MuSeNet: Complex-Valued Multi-Signal Segmentation",
        "out of scope",
        "other",
        note="complex-valued signal segmentation",
    ),
    Paper(
        "Understanding Hessian Alignment for Domain Generalization",
        "out of scope",
        "other",
        note="domain generalisation for classifiers",
    ),
    Paper(
        "Generalization in diffusion models arises from geometry-adaptive harmonic representations",
        "out of scope",
        "other",
        note="analysis of generalisation in trained diffusion denoisers",
    ),
    Paper(
        "Solving High-Dimensional PDEs with Latent Spectral Models",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.LSM",
            "jaxsolve.operators.NeuralSpectralBlock",
        ),
        note="the latent spectral model: attention to latent tokens, a learned sine/cosine basis, back to the grid",
    ),
    Paper(
        "Lagrangian PINNs: A causality-conforming solution to failure modes of physics-informed neural networks",
        "implemented",
        "pinn",
        names=(
            "jaxsolve.pinn.LagrangianNetwork",
            "jaxsolve.pinn.LagrangianResidual",
            "jaxsolve.pinn.lagrangian_residual",
            "jaxsolve.pinn.lagrangian_convection",
            "jaxsolve.pinn.CharacteristicModel",
            "jaxsolve.pinn.CharacteristicResidual",
            "jaxsolve.pinn.LagrangianBurgersResidual",
            "jaxsolve.pinn.lagrangian_burgers",
            "jaxsolve.pinn.eulerian_values",
        ),
        note="networks on characteristic coordinates, with fixed or learned characteristics",
    ),
    Paper(
        "One Step of Gradient Descent is Provably the Optimal In-Context Learner with One Layer of Linear Self-Attention",
        "out of scope",
        "other",
        note="learning theory (in-context learning)",
    ),
    Paper(
        "NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
        "out of scope",
        "other",
        note="training without backpropagation",
    ),
    Paper(
        "How Powerful are Shallow Neural Networks with Bandlimited Random Weights?",
        "out of scope",
        "other",
        note="approximation theory (random-weight networks)",
    ),
    Paper(
        "OLinear: A Linear Model for Time Series Forecasting in Orthogonally Transformed Domain",
        "out of scope",
        "other",
        note="time-series forecasting",
    ),
    Paper(
        "Diff-Instruct*: Towards Human-Preferred One-step Text-to-image Generative Models",
        "out of scope",
        "other",
        note="human-preference alignment of text-to-image generators",
    ),
    Paper(
        "What Regularized Auto-Encoders Learn from the Data Generating Distribution",
        "out of scope",
        "other",
        note="theory of regularised auto-encoders",
    ),
    Paper(
        "NeuRBF: A Neural Fields Representation with Adaptive Radial Basis Functions",
        "out of scope",
        "other",
        note="neural fields for images and shapes",
    ),
    Paper(
        "Random Teachers are Good Teachers",
        "out of scope",
        "other",
        note="self-distillation theory",
    ),
    Paper(
        "Magnitude Invariant Parametrizations Improve Hypernetwork Learning",
        "out of scope",
        "other",
        note="hypernetwork parametrisation",
    ),
    Paper(
        "Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training",
        "out of scope",
        "other",
        note="learning-rate scaling theory",
    ),
    Paper(
        "Diffusion Models Beat GANs on Image Classification",
        "out of scope",
        "other",
        note="diffusion models as image classifiers",
    ),
    Paper(
        "One-Step Diffusion Distillation through Score Implicit Matching",
        "not implemented",
        "diffusion",
        note="one-step distillation by score implicit matching is not built (jaxsolve has DMD and f-distill)",
    ),
    Paper(
        "Spectral Bottleneck in Deep Neural Networks: Noise is All You Need",
        "out of scope",
        "other",
        note="spectral bias of networks",
    ),
    Paper(
        "What can a Single Attention Layer Learn? A Study Through the Random Features Lens",
        "out of scope",
        "other",
        note="learning theory (attention layers)",
    ),
    Paper(
        "EigenShield: Causal Subspace Filtering via Random Matrix Theory for Adversarially Robust Vision-Language Models",
        "out of scope",
        "other",
        note="adversarial robustness of vision-language models",
    ),
    Paper(
        "When Do Curricula Work in Federated Learning?",
        "out of scope",
        "other",
        note="federated learning",
    ),
    Paper(
        "Learning Unnormalized Statistical Models via Compositional Optimization",
        "out of scope",
        "other",
        note="unnormalised statistical models (compositional optimisation)",
    ),
    Paper(
        "Kolmogorov-Arnold Neural Networks for High-Entropy Alloys Design",
        "out of scope",
        "other",
        note="materials design with Kolmogorov-Arnold networks",
    ),
    Paper(
        "Denoising Task Difficulty-based Curriculum for Training Diffusion Models",
        "not implemented",
        "diffusion",
        note="a noise-level curriculum for training diffusion models is not built",
    ),
    Paper(
        "Optimal Weighted Convolution for Classification and Denosing",
        "out of scope",
        "other",
        note="convolution design for image classification and denoising",
    ),
    Paper(
        "OVOR: OnePrompt with Virtual Outlier Regularization for Rehearsal-Free Class-Incremental Learning",
        "out of scope",
        "other",
        note="continual learning",
    ),
    Paper(
        "Learning Multiple-Scattering Solutions for Sphere-Tracing of Volumetric Subsurface Effects",
        "out of scope",
        "other",
        note="rendering (subsurface scattering)",
    ),
    Paper(
        "DeiT-LT Distillation Strikes Back for Vision Transformer Training on Long-Tailed Datasets",
        "out of scope",
        "other",
        note="vision transformer distillation",
    ),
    Paper(
        "Improving Multimodal Learning via Imbalanced Learning",
        "out of scope",
        "other",
        note="multimodal learning",
    ),
    Paper(
        "FedLoGe: Joint Local and Generic Federated Learning under Long-tailed Data",
        "out of scope",
        "other",
        note="federated learning",
    ),
    Paper(
        "PROSE: Predicting Operators and Symbolic Expressions using Multimodal Transformers",
        "not implemented",
        "operators",
        note="multimodal transformers predicting operators and symbolic expressions are not built",
    ),
    Paper(
        "Spectral-Refiner: Fine-Tuning of Accurate Spatiotemporal Neural Operator for Turbulent Flows",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.SpaceTimeFNO",
            "jaxsolve.operators.SpaceTimeHead",
            "jaxsolve.operators.spectral_refine",
            "jaxsolve.operators.negative_sobolev_loss",
        ),
        note="the space-time FNO whose last layer is refitted in closed form in a negative Sobolev norm",
        aliases=(
            "Spectral-Refiner: Accurate Fine-Tuning of Spatiotemporal Fourier Neural Operator for Turbulent Flows",
        ),
    ),
    Paper(
        "Robustifying State-space Models for Long Sequences via Approximate Diagonalization",
        "out of scope",
        "other",
        note="state-space sequence models",
    ),
    Paper(
        "Singular Value Decomposition on Kronecker Adaptation for Large Language Model",
        "out of scope",
        "other",
        note="LLM fine-tuning",
    ),
    Paper(
        "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank Adaptation",
        "out of scope",
        "other",
        note="diffusion-model fine-tuning (sparse low-rank adaptation of image models)",
    ),
    Paper(
        "DiffSpectra: Molecular Structure Elucidation from Spectra using Diffusion Models",
        "out of scope",
        "other",
        note="molecular structure elucidation",
    ),
    Paper(
        "Representation Alignment for Generation: Training Diffusion Transformers Is Easier Than You Think",
        "out of scope",
        "other",
        note="diffusion-transformer training aligned with a pretrained vision encoder",
    ),
    Paper(
        "Towards Exact Computation of Inductive Bias",
        "out of scope",
        "other",
        note="learning theory (inductive bias)",
    ),
    Paper(
        "No Fear of Heterogeneity: Classifier Calibration for Federated Learning with Non-IID Data",
        "out of scope",
        "other",
        note="federated learning",
    ),
    Paper(
        "Diffusion Probabilistic Model Made Slim",
        "out of scope",
        "other",
        note="compressing image diffusion networks",
    ),
    Paper(
        "Multi-Grid Tensorized Fourier Neural Operator for High-Resolution PDEs",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.TFNO",
            "jaxsolve.operators.TuckerSpectralWeight",
            "jaxsolve.operators.CPSpectralWeight",
            "jaxsolve.operators.MultigridPatching",
            "jaxsolve.operators.multigrid_patches",
            "jaxsolve.operators.stitch_patches",
        ),
        note="Tucker/CP-factorised spectral weights contracted from the factors, and the multigrid domain decomposition (MG-TFNO)",
    ),
    Paper(
        "Oscillation-free Quantization for Low-bit Vision Transformers",
        "out of scope",
        "other",
        note="quantisation of vision transformers",
    ),
    Paper(
        "Accurate Computation of the Logarithm of Modified Bessel Functions on GPUs",
        "out of scope",
        "other",
        note="special-function numerics on GPUs",
    ),
    Paper(
        "Probing then Editing Response Personality of Large Language Models",
        "out of scope",
        "other",
        note="LLM interpretability",
    ),
    Paper(
        "Perturbation Analysis of Neural Collapse",
        "out of scope",
        "other",
        note="learning theory (neural collapse)",
    ),
    Paper(
        "Robust Representation Consistency Model via Contrastive Denoising",
        "out of scope",
        "other",
        note="certified robustness of classifiers",
    ),
    Paper(
        "Existence, Stability and Scalability of Orthogonal Convolutional Neural Networks",
        "out of scope",
        "other",
        note="orthogonal convolutional networks",
    ),
    Paper(
        "Locally Regularized Neural Differential Equations: Some Black Boxes Were Meant to Remain Closed!",
        "implemented",
        "ode",
        names=("jaxsolve.ode.LocalRegulariser",),
        note="the adaptive solver's error and stiffness estimates of one step from a random time as a loss",
    ),
    Paper(
        "Automatic Perturbation Analysis for Scalable Certified Robustness and Beyond",
        "out of scope",
        "other",
        note="certified robustness (perturbation analysis)",
    ),
    Paper(
        "A likelihood approach to nonparametric estimation of a singular distribution using deep generative models",
        "out of scope",
        "other",
        note="nonparametric statistics with generative models",
    ),
    Paper(
        "Adversarial Style Augmentation for Domain Generalization",
        "out of scope",
        "other",
        note="data augmentation for domain generalisation",
    ),
    Paper(
        "Towards scalable surrogate models based on Neural Fields for large scale aerodynamic simulations",
        "not implemented",
        "operators",
        note="neural-field aerodynamic surrogates on meshes are not built",
    ),
    Paper(
        "On Penalty Methods for Nonconvex Bilevel Optimization and First-Order Stochastic Approximation",
        "not implemented",
        "implicit",
        note="this first-order stochastic penalty method is not built; jaxsolve's penalty method, PenaltyHypergradient, is V-PBGD from 'On Penalty-based Bilevel Gradient Descent'",
    ),
    Paper(
        "PDE-Refiner: Achieving Accurate Long Rollouts with Neural PDE Solvers",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.RefinerNet",
            "jaxsolve.operators.refiner_loss",
            "jaxsolve.operators.make_refiner_loss",
            "jaxsolve.operators.refine_step",
            "jaxsolve.operators.refiner_rollout",
            "jaxsolve.operators.refiner_noise_levels",
        ),
        note="the refinement loop of denoising steps on each rollout step, its training loss and rollouts",
    ),
    Paper(
        "Beyond First-Order Tweedie: Solving Inverse Problems using Latent Diffusion",
        "partly",
        "diffusion",
        names=("jaxsolve.diffusion.inverse.STSL",),
        note="the second-order Tweedie surrogate guidance on the diffusion state; the latent-diffusion (autoencoder) setting is not built",
    ),
    Paper(
        "Training Deep Surrogate Models with Large Scale Online Learning",
        "not implemented",
        "operators",
        note="online training of surrogates on simulations streamed during training is not built",
    ),
    Paper(
        "Generalizable Data-free Objective for Crafting Universal Adversarial Perturbations",
        "out of scope",
        "other",
        note="adversarial perturbations",
    ),
    Paper(
        "Adversarial Adaptive Sampling: Unify PINN and Optimal Transport for the Approximation of PDEs",
        "partly",
        "pinn",
        names=(
            "jaxsolve.pinn.AdversarialSampler",
            "jaxsolve.pinn.FlowSamplerAux",
        ),
        note="collocation points from a generative flow fitted to the residual-induced density; the paper's min-max objective with a KRnet density is not reproduced",
    ),
    Paper(
        "Sound propagation in realistic interactive 3D scenes with parameterized sources using deep neural operators",
        "out of scope",
        "other",
        note="application study (room acoustics with DeepONet)",
    ),
    Paper(
        "Random Sub-Samples Generation for Self-Supervised Real Image Denoising",
        "out of scope",
        "other",
        note="self-supervised image denoising",
    ),
    Paper(
        "Uncertainty-guided Perturbation for Image Super-Resolution Diffusion Model",
        "out of scope",
        "other",
        note="image super-resolution with diffusion models",
    ),
    Paper(
        "PIG: Physics-Informed Gaussians as Adaptive Parametric Mesh Representations",
        "implemented",
        "pinn",
        names=("jaxsolve.pinn.PhysicsInformedGaussians",),
        note="the learnable Gaussian-mixture embedding followed by a small MLP",
    ),
    Paper(
        "Exact Diffusion Inversion via Bi-directional Integration Approximation",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.BDIA",
            "jaxsolve.diffusion.bdia_invert",
        ),
        note="the BDIA-DDIM sampler and its exact inversion",
    ),
    Paper(
        "A Unified Framework for Forward and Inverse Problems in Subsurface Imaging using Latent Space Translations",
        "out of scope",
        "other",
        note="application study (subsurface imaging)",
    ),
    Paper(
        "Implicit Neural Spatial Representations for Time-dependent PDEs",
        "not implemented",
        "pinn",
        note="time integration of implicit neural representations (INSR) is not built",
    ),
    Paper(
        "Uncertainty quantification in a mechanical submodel driven by a Wasserstein-GAN",
        "out of scope",
        "other",
        note="application study (uncertainty quantification in mechanics)",
    ),
    Paper(
        "EquiNO: A Physics-Informed Neural Operator for Multiscale Simulations",
        "not implemented",
        "operators",
        note="a physics-informed operator for multiscale homogenisation is not built",
    ),
    Paper(
        "Random Grid Neural Processes for Parametric Partial Differential Equations",
        "not implemented",
        "operators",
        note="neural processes on random grids are not built",
    ),
    Paper(
        "Stochastic Interpolants: A Unifying Framework for Flows and Diffusions",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.StochasticInterpolant",
            "jaxsolve.diffusion.InterpolantSolver",
            "jaxsolve.diffusion.interpolant_grid",
            "jaxsolve.diffusion.interpolant_model",
        ),
        note="interpolant coefficients and losses, and the ODE/SDE generation for any diffusion coefficient",
    ),
    Paper(
        "Constrained Bi-Level Optimization: Proximal Lagrangian Value function Approach and Hessian-free Algorithm",
        "not implemented",
        "implicit",
        note="constrained bilevel optimisation by a proximal Lagrangian value function is not built",
    ),
    Paper(
        "Opening the Blackbox: Accelerating Neural Differential Equations by Regularizing Internal Solver Heuristics",
        "implemented",
        "ode",
        names=("jaxsolve.ode.GlobalRegulariser",),
        note="the adaptive solver's error and stiffness estimates summed over the solve as a loss (ERNODE, SRNODE), for ODEs, SDEs and CNFs",
    ),
    Paper(
        "Meta Learning of Interface Conditions for Multi-Domain Physics-Informed Neural Networks",
        "not implemented",
        "pinn",
        note="multi-domain PINNs with meta-learned interface conditions are not built",
    ),
    Paper(
        "Backpropagation-free Training of Deep Physical Neural Networks",
        "out of scope",
        "other",
        note="training physical (hardware) neural networks",
    ),
    Paper(
        "NeuralStagger: Accelerating Physics-constrained Neural PDE Solver with Spatial-temporal Decomposition",
        "not implemented",
        "operators",
        note="spatio-temporal decomposition of a physics-constrained solver is not built",
    ),
    Paper(
        "Dense Hebbian neural networks: a replica symmetric picture of supervised learning",
        "out of scope",
        "other",
        note="statistical physics of Hebbian networks",
    ),
    Paper(
        "A Unified Module for Accelerating STABLE-DIFFUSION: LCM-LORA",
        "partly",
        "diffusion",
        names=(
            "jaxsolve.diffusion.fewstep.LCMSampler",
            "jaxsolve.diffusion.fewstep.lcm_timesteps",
            "jaxsolve.diffusion.fewstep.lcm_sigmas",
        ),
        note="the latent consistency sampler an LCM-LoRA model runs with; the LoRA distillation of Stable Diffusion is not built",
        aliases=("LCM-LoRA: A Universal Stable-Diffusion Acceleration Module",),
    ),
    Paper(
        "The Principles of Deep Learning Theory",
        "out of scope",
        "other",
        note="learning theory (a book)",
    ),
    Paper(
        "Learning Semilinear Neural Operators : A Unified Recursive Framework For Prediction And Data Assimilation",
        "not implemented",
        "operators",
        note="semilinear neural operators for prediction and data assimilation are not built",
    ),
    Paper(
        "Neural Network Approximations of PDEs Beyond Linearity: A Representational Perspective",
        "out of scope",
        "other",
        note="approximation theory for PDE solutions",
    ),
    Paper(
        "Diffusion Sampling with Momentum for Mitigating Divergence Artifacts",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.GHVB",
            "jaxsolve.diffusion.HeavyBall",
        ),
        note="generalised heavy-ball momentum (GHVB) and Polyak momentum around any solver",
    ),
    Paper(
        "Physics-informed cluster analysis and a priori efficiency criterion for the construction of local reduced-order bases",
        "out of scope",
        "other",
        note="projection-based reduced-order models",
    ),
    Paper(
        "HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural Networks",
        "out of scope",
        "other",
        note="network quantisation",
    ),
    Paper(
        "An efficient Asymptotic-Preserving scheme for the Boltzmann mixture with disparate mass",
        "out of scope",
        "other",
        note="kinetic-equation numerics (Boltzmann mixtures)",
    ),
    Paper(
        "ExposureDiffusion: Learning to Expose for Low-light Image Enhancement",
        "out of scope",
        "other",
        note="low-light image enhancement",
    ),
    Paper(
        "Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of View",
        "out of scope",
        "other",
        note="transformer architecture design",
    ),
    Paper(
        "Rethinking Architecture Selection in Differentiable NAS",
        "out of scope",
        "other",
        note="neural architecture search",
    ),
    Paper(
        "SineNet: Learning Temporal Dynamics in Time-Dependent Partial Differential Equations",
        "implemented",
        "operators",
        names=("jaxsolve.operators.SineNet",),
        note="the time-stepper of sequential U-Net waves with circular padding",
    ),
    Paper(
        "A Variational Perspective on Solving Inverse Problems with Diffusion Models",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.inverse.REDDiff",
            "jaxsolve.diffusion.inverse.paper_adam",
        ),
        note="RED-Diff: the variational posterior mean optimised with denoiser regularisation",
    ),
    Paper(
        "Variational Inference for SDEs Driven by Fractional Noise",
        "not implemented",
        "ode",
        note="variational inference for SDEs driven by fractional Brownian motion is not built",
    ),
    Paper(
        "LESnets (Large-Eddy Simulation nets): Physics-informed neural operator for large-eddy simulation of turbulence",
        "not implemented",
        "operators",
        note="a physics-informed operator for large-eddy simulation is not built",
    ),
    Paper(
        "Augmenting Hessians with Inter-Layer Dependencies for Mixed-Precision Post-Training Quantization",
        "out of scope",
        "other",
        note="network quantisation",
    ),
    Paper(
        "All You Need is RAW: Defending Against Adversarial Attacks with Camera Image Pipelines",
        "out of scope",
        "other",
        note="adversarial robustness via camera pipelines",
    ),
    Paper(
        "A Simple Approach to Unifying Diffusion-based Conditional Generation",
        "out of scope",
        "other",
        note="conditional image generation with diffusion models",
    ),
    Paper(
        "The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent",
        "out of scope",
        "other",
        note="learning theory (SGD stability)",
    ),
    Paper(
        "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance",
        "not implemented",
        "diffusion",
        note="perturbed-attention guidance needs access to a network's self-attention maps; not built",
    ),
    Paper(
        "One is All: Bridging the Gap Between Neural Radiance Fields Architectures with Progressive Volume Distillation",
        "out of scope",
        "other",
        note="neural radiance fields",
    ),
    Paper(
        "Learning Neural PDE Solvers with Parameter-Guided Channel Attention",
        "not implemented",
        "operators",
        note="parameter-guided channel attention for neural PDE solvers is not built",
    ),
    Paper(
        "Restart Sampling for Improving Generative Processes",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.Restart",
            "jaxsolve.diffusion.restart_sigmas",
        ),
        note="forward-noise restarts inserted into the grid, with any ODE solver between them",
    ),
    Paper(
        "Q-VLM: Post-training Quantization for Large Vision-Language Models",
        "out of scope",
        "other",
        note="quantisation of vision-language models",
    ),
    Paper(
        "AdaFlow: Imitation Learning with Variance-Adaptive Flow-Based Policies",
        "out of scope",
        "other",
        note="imitation learning",
    ),
    Paper(
        "Gaussian Mixture Flow Matching Models",
        "not implemented",
        "diffusion",
        note="flow matching with Gaussian-mixture outputs is not built",
    ),
    Paper(
        "Efficient Speech Language Modeling via Energy Distance in Continuous Latent Space",
        "out of scope",
        "other",
        note="speech language modelling",
    ),
    Paper(
        "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.fewstep.scm_loss",
            "jaxsolve.diffusion.fewstep.scm_tangent",
            "jaxsolve.diffusion.fewstep.tangent_normalization",
            "jaxsolve.diffusion.fewstep.trigflow_consistency",
            "jaxsolve.diffusion.fewstep.TrigFlowDenoiser",
            "jaxsolve.diffusion.fewstep.TrigFlowModel",
            "jaxsolve.diffusion.fewstep.from_trigflow",
            "jaxsolve.diffusion.fewstep.to_trigflow",
            "jaxsolve.diffusion.fewstep.trigflow_sigma",
            "jaxsolve.diffusion.fewstep.trigflow_time",
            "jaxsolve.diffusion.PositionalEmbedding",
        ),
        note="TrigFlow, the continuous-time consistency objective with tangent normalisation and adaptive weighting (sCM)",
    ),
    Paper(
        "Learnable Sampler Distillation for Discrete Diffusion Models",
        "out of scope",
        "other",
        note="discrete diffusion (jaxsolve's diffusion pillar is continuous-state)",
    ),
    Paper(
        "Revisiting the Effects of Stochasticity for Hamiltonian Samplers",
        "out of scope",
        "other",
        note="MCMC (Hamiltonian samplers for Bayesian posteriors)",
    ),
    Paper(
        "Decoupled MeanFlow: Turning Flow Models into Flow Maps for Accelerated Sampling",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.fewstep.DecoupledFlowMap",
            "jaxsolve.diffusion.fewstep.decoupled_meanflow_loss",
            "jaxsolve.diffusion.fewstep.decoupled_noise_mlp",
        ),
        note="a flow network split so its last blocks read the target time, and its fine-tuning loss",
    ),
    Paper(
        "FlamePINN-1D: Physics-informed neural networks to solve forward and inverse problems of 1D laminar flames",
        "out of scope",
        "other",
        note="application study (PINNs for laminar flames)",
    ),
    Paper(
        "Fast Sampling of Diffusion Models with Exponential Integrator",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.DEIS",
            "jaxsolve.diffusion.IPNDM",
        ),
        note="DEIS (Adams-Bashforth in a chosen time variable, exact integrals) and iPNDM",
    ),
    Paper(
        "Dual Diffusion Implicit Bridges for Image-to-Image Translation",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.ddib_translate",
            "jaxsolve.diffusion.invert",
        ),
        note="translation by running one model's probability-flow ODE up and another's down",
    ),
    Paper(
        "Generalization Error Analysis for Selective State-Space Models Through the Lens of Attention",
        "out of scope",
        "other",
        note="learning theory (state-space models)",
    ),
    Paper(
        "PhysiX: A Foundation Model for Physics Simulations",
        "not implemented",
        "operators",
        note="a pretrained foundation model for physics video; needs large-scale pretraining and its weights",
    ),
    Paper(
        "MotionStreamer: Streaming Motion Generation via Diffusion-based Autoregressive Model in Causal Latent Space",
        "out of scope",
        "other",
        note="motion generation",
    ),
    Paper(
        "Langevin Monte Carlo for strongly log-concave distributions: Randomized midpoint revisited",
        "out of scope",
        "other",
        note="MCMC (Langevin Monte Carlo)",
    ),
    Paper(
        "Optimal Stepsize for Diffusion Sampling",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.optimal_sigmas",
            "jaxsolve.diffusion.OSSResult",
        ),
        note="the optimal step schedule found by dynamic programming against a teacher",
    ),
    Paper(
        "Efficient Quantum Algorithms for Quantum Optimal Control",
        "out of scope",
        "other",
        note="quantum optimal control",
    ),
    Paper(
        "X-Omni: Reinforcement Learning Makes Discrete Autoregressive Image Generative Models Great Again",
        "out of scope",
        "other",
        note="autoregressive image generation with reinforcement learning",
    ),
    Paper(
        "DQS3D: Densely-matched Quantization-aware Semi-supervised 3D Detection",
        "out of scope",
        "other",
        note="3-D object detection",
    ),
    Paper(
        "Generative Regression Based Watch Time Prediction for Short-Video Recommendation",
        "out of scope",
        "other",
        note="recommendation systems",
    ),
    Paper(
        "Uncertainty quantification for stationary and time-dependent PDEs subject to Gevrey regular random domain deformations",
        "out of scope",
        "other",
        note="numerical analysis (uncertainty quantification on random domains)",
    ),
    Paper(
        "Accurate and efficient evaluation of the a posteriori error estimator in the reduced basis method",
        "out of scope",
        "other",
        note="reduced-basis numerics",
    ),
    Paper(
        "Accurate a posteriori error evaluation in the reduced basis method",
        "out of scope",
        "other",
        note="reduced-basis numerics",
    ),
    Paper(
        "Better Neural PDE Solvers Through Data-Free Mesh Movers",
        "not implemented",
        "operators",
        note="data-free learned mesh movers for neural PDE solvers are not built",
    ),
    Paper(
        "Optimally truncated WKB approximation for the highly oscillatory stationary 1D Schrödinger equation",
        "out of scope",
        "other",
        note="numerical analysis (WKB approximations)",
    ),
    Paper(
        "Improved Analysis of Score-based Generative Modeling: User-Friendly Bounds under Minimal Smoothness Assumptions",
        "out of scope",
        "other",
        note="convergence theory of score-based models",
    ),
    Paper(
        "Mind the Gap: Removing the Discretization Gap in Differentiable Logic Gate Networks",
        "out of scope",
        "other",
        note="logic gate networks",
    ),
    Paper(
        "Neural Operator: Is data all you need to model the world? An insight into the impact of Physics Informed Machine Learning",
        "out of scope",
        "other",
        note="a review of physics-informed operator learning",
    ),
    Paper(
        "Operator Learning with Neural Fields: Tackling PDEs on General Geometries",
        "not implemented",
        "operators",
        note="operator learning with neural fields (CORAL) is not built",
    ),
    Paper(
        "Mesh-robust stability and convergence of variable-step deferred correction methods based on the BDF2 formula",
        "out of scope",
        "other",
        note="numerical analysis (deferred correction with BDF2)",
    ),
    Paper(
        "On Error Propagation of Diffusion Models",
        "not implemented",
        "diffusion",
        note="the cumulative-error regulariser for training diffusion models is not built",
    ),
    Paper(
        "Proper losses for discrete generative models",
        "out of scope",
        "other",
        note="discrete generative models (proper losses)",
    ),
    Paper(
        "DiscQuant: A Quantization Method for Neural Networks Inspired by Discrepancy Theory",
        "out of scope",
        "other",
        note="network quantisation",
    ),
    Paper(
        "Interpretable structural model error discovery from sparse assimilation increments using spectral bias-reduced neural networks: A quasi-geostrophic turbulence test case",
        "out of scope",
        "other",
        note="application study (model-error discovery in turbulence)",
    ),
    Paper(
        "High-dimensional dynamics of generalization error in neural networks",
        "out of scope",
        "other",
        note="learning theory (generalisation dynamics)",
    ),
    Paper(
        "Discrete Total Variation with Finite Elements and Applications to Imaging",
        "out of scope",
        "other",
        note="finite-element imaging (total variation)",
    ),
    Paper(
        "LEMMA: Learning from Errors for MatheMatical Advancement in LLMs",
        "out of scope",
        "other",
        note="LLM reasoning",
    ),
    Paper(
        "Optimal Control of Coefficients in Parabolic Free Boundary Problems Modeling Laser Ablation",
        "out of scope",
        "other",
        note="PDE-constrained optimal control (laser ablation)",
    ),
    Paper(
        "General Covariance Data Augmentation for Neural PDE Solvers",
        "not implemented",
        "operators",
        note="general-covariance data augmentation for neural PDE solvers is not built",
    ),
    Paper(
        "Discovery of interpretable structural model errors by combining Bayesian sparse regression and data assimilation: A chaotic Kuramoto-Sivashinsky test case",
        "out of scope",
        "other",
        note="application study (model-error discovery, Kuramoto-Sivashinsky)",
    ),
    Paper(
        "Nonintrusive approximation of parametrized limits of matrix power algorithms -- application to matrix inverses and log-determinants",
        "out of scope",
        "other",
        note="numerical linear algebra (matrix functions)",
    ),
    Paper(
        "Closed-Form Diffusion Models",
        "implemented",
        "diffusion",
        names=("jaxsolve.diffusion.analytic.Empirical",),
        note="the smoothed closed-form denoiser of a finite training set, as an exact oracle",
    ),
    Paper(
        "Fantastic Generalization Measures are Nowhere to be Found",
        "out of scope",
        "other",
        note="learning theory (generalisation measures)",
    ),
    Paper(
        "EControl: Fast Distributed Optimization with Compression and Error Control",
        "out of scope",
        "other",
        note="distributed optimisation with compression",
    ),
    Paper(
        "Minimizing Trajectory Curvature of ODE-based Generative Models",
        "not implemented",
        "diffusion",
        note="training to minimise trajectory curvature is not built (jaxsolve measures straightness and trains on reflow couplings)",
    ),
    Paper(
        "A Note on Shumailov et al. (2024): `AI Models Collapse When Trained on Recursively Generated Data'",
        "out of scope",
        "other",
        note="model collapse in generative models",
    ),
    Paper(
        "LADDER: Language Driven Slice Discovery and Error Rectification",
        "out of scope",
        "other",
        note="LLM-driven slice discovery",
    ),
    Paper(
        "A domain splitting strategy for solving PDEs",
        "out of scope",
        "other",
        note="classical domain decomposition for advection-diffusion",
    ),
    Paper(
        "Message Passing Neural PDE Solvers",
        "implemented",
        "operators",
        names=(
            "jaxsolve.operators.MPPDE",
            "jaxsolve.operators.MPPDEGrid",
            "jaxsolve.operators.mppde_neighbours",
            "jaxsolve.operators.grid_neighbours",
            "jaxsolve.operators.bundle_trajectory",
            "jaxsolve.operators.unbundle_trajectory",
            "jaxsolve.train.rollout_loss",
        ),
        note="message passing on neighbour lists with temporal bundling, trained with the pushforward trick",
    ),
    Paper(
        "Generalization Bounds for Magnitude-Based Pruning via Sparse Matrix Sketching",
        "out of scope",
        "other",
        note="learning theory (pruning)",
    ),
    Paper(
        "Generalization error of spectral algorithms",
        "out of scope",
        "other",
        note="learning theory (spectral algorithms)",
    ),
    Paper(
        "Generalized Denoising Auto-Encoders as Generative Models",
        "out of scope",
        "other",
        note="theory of denoising auto-encoders",
    ),
    Paper(
        "On Neural Differential Equations",
        "partly",
        "ode",
        names=("jaxsolve.ode.NeuralCDE",),
        note="a thesis surveying neural ODEs, CDEs and SDEs; the neural CDE follows it, and NeuralODE / NeuralSDE are built on diffrax (the thesis's library)",
    ),
    Paper(
        "Neural Operator: Learning Maps Between Function Spaces",
        "partly",
        "operators",
        names=(
            "jaxsolve.operators.GNO",
            "jaxsolve.operators.radius_neighbours",
        ),
        note="the graph kernel-integral layer on radius neighbourhoods; the low-rank and multipole variants are not built (the FNO has its own paper)",
    ),
    Paper(
        "Exploration of Numerical Precision in Deep Neural Networks",
        "out of scope",
        "other",
        note="numerical precision of networks",
    ),
    Paper(
        "Improving Diffusion Models for Inverse Problems using Manifold Constraints",
        "implemented",
        "diffusion",
        names=("jaxsolve.diffusion.inverse.MCG",),
        note="DPS guidance plus a projection onto the measurement after every step",
    ),
    Paper(
        "Learning to Reject with a Fixed Predictor: Application to Decontextualization",
        "out of scope",
        "other",
        note="learning to reject (classification)",
    ),
    Paper(
        "Performance analysis of Volna-OP2 -- massively parallel code for tsunami modelling",
        "out of scope",
        "other",
        note="HPC performance of a tsunami code",
    ),
    Paper(
        "Real-Time Prediction of Gas Flow Dynamics in Diesel Engines using a Deep Neural Operator Framework",
        "out of scope",
        "other",
        note="application study (engine gas dynamics)",
    ),
    Paper(
        "Understanding Gradient Regularization in Deep Learning: Efficient Finite-Difference Computation and Implicit Bias",
        "out of scope",
        "other",
        note="gradient regularisation in deep learning",
    ),
    Paper(
        "Partial Differential Equations is All You Need for Generating Neural Architectures -- A Theory for Physical Artificial Intelligence Systems",
        "out of scope",
        "other",
        note="neural architecture design from PDEs",
    ),
    Paper(
        "Matrix Product Sketching via Coordinated Sampling",
        "out of scope",
        "other",
        note="matrix sketching",
    ),
    Paper(
        "An operator preconditioning perspective on training in physics-informed machine learning",
        "partly",
        "pinn",
        names=("jaxsolve.pinn.GaussNewton",),
        note="the Gauss-Newton (natural-gradient) update preconditions the PINN loss as the paper's analysis prescribes; the analysis itself is theory",
    ),
    Paper(
        "Learning Nonlinear Responses in PET Bottle Buckling with a Hybrid DeepONet-Transolver Framework",
        "out of scope",
        "other",
        note="application study (bottle buckling)",
    ),
    Paper(
        "Mitigating Propagation Failures in Physics-informed Neural Networks using Retain-Resample-Release (R3) Sampling",
        "implemented",
        "pinn",
        names=("jaxsolve.pinn.R3",),
        note="Retain-Resample-Release collocation sampling, with its causal extension",
    ),
    Paper(
        "Toward INT4 Fixed-Point Training via Exploring Quantization Error for Gradients",
        "out of scope",
        "other",
        note="low-precision training",
    ),
    Paper(
        "Multiscale Neural Operator: Learning Fast and Grid-independent PDE Solvers",
        "not implemented",
        "operators",
        note="the multiscale operator (a learned correction to a coarse solver) is not built",
    ),
    Paper(
        "Chinchilla Scaling: A replication attempt",
        "out of scope",
        "other",
        note="LLM scaling laws",
    ),
    Paper(
        "Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate Categorical Sampling",
        "out of scope",
        "other",
        note="discrete (masked) diffusion",
    ),
    Paper(
        "On the saddle point problem for non-convex optimization",
        "out of scope",
        "other",
        note="non-convex optimisation theory",
    ),
    Paper(
        "Addressing Function Approximation Error in Actor-Critic Methods",
        "out of scope",
        "other",
        note="reinforcement learning",
    ),
    Paper(
        "Algorithmic Stability of Heavy-Tailed SGD with General Loss Functions",
        "out of scope",
        "other",
        note="learning theory (heavy-tailed SGD)",
    ),
    Paper(
        "Generative Adversarial Networks",
        "out of scope",
        "other",
        note="generative adversarial networks",
    ),
    Paper(
        "Error Feedback Reloaded: From Quadratic to Arithmetic Mean of Smoothness Constants",
        "out of scope",
        "other",
        note="distributed optimisation (error feedback)",
    ),
    Paper(
        "Implicit regularization of deep residual networks towards neural ODEs",
        "out of scope",
        "other",
        note="learning theory (residual networks and neural ODEs)",
    ),
    Paper("Showing Your Work Doesn't Always Work", "out of scope", "other", note="LLM prompting"),
    Paper(
        "Light Schrödinger Bridge",
        "not implemented",
        "diffusion",
        note="Schrödinger bridges are not built",
    ),
    Paper(
        "Consistent3D: Towards Consistent High-Fidelity Text-to-3D Generation with Deterministic Sampling Prior",
        "out of scope",
        "other",
        note="text-to-3-D generation",
    ),
    Paper(
        "Balancing Computational Efficiency and Forecast Error in Machine Learning-based Time-Series Forecasting: Insights from Live Experiments on Meteorological Nowcasting",
        "out of scope",
        "other",
        note="weather nowcasting operations",
    ),
    Paper(
        "Input Perturbation Reduces Exposure Bias in Diffusion Models",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.dsm_loss",
            "jaxsolve.diffusion.edm_loss",
            "jaxsolve.diffusion.eps_loss",
            "jaxsolve.diffusion.x0_loss",
            "jaxsolve.diffusion.v_loss",
        ),
        note="input perturbation (DDPM-IP) as the input_perturbation option of every training loss",
    ),
    Paper(
        "Adversarial Classification: Necessary conditions and geometric flows",
        "out of scope",
        "other",
        note="adversarial classification theory",
    ),
    Paper(
        "Uncertainty quantification for industrial design using dictionaries of reduced order models",
        "out of scope",
        "other",
        note="reduced-order models for industrial design",
    ),
    Paper(
        "Intriguing Properties of Adversarial Examples",
        "out of scope",
        "other",
        note="adversarial examples",
    ),
    Paper(
        "Sketched Ridgeless Linear Regression: The Role of Downsampling",
        "out of scope",
        "other",
        note="sketched linear regression",
    ),
    Paper(
        "sharpDARTS: Faster and More Accurate Differentiable Architecture Search",
        "out of scope",
        "other",
        note="neural architecture search",
    ),
    Paper(
        "Scaling physics-informed hard constraints with mixture-of-experts",
        "not implemented",
        "pinn",
        note="hard constraints enforced by a mixture of experts are not built (jaxsolve has ansatz-based hard constraints)",
    ),
    Paper(
        "On the Importance of Gradient Norm in PAC-Bayesian Bounds",
        "out of scope",
        "other",
        note="learning theory (PAC-Bayes)",
    ),
    Paper(
        "The Value of Out-of-Distribution Data",
        "out of scope",
        "other",
        note="learning theory (out-of-distribution data)",
    ),
    Paper(
        "NUNO: A General Framework for Learning Parametric PDEs with Non-Uniform Data",
        "not implemented",
        "operators",
        note="operators on non-uniform data by domain partitioning (NUNO) are not built",
    ),
    Paper(
        "Learning the Dynamics of Sparsely Observed Interacting Systems",
        "not implemented",
        "ode",
        note="signature regression for sparsely observed CDE dynamics is not built (jaxsolve's NeuralCDE is the neural alternative)",
    ),
    Paper(
        "Concentration of Measure for Distributions Generated via Diffusion Models",
        "out of scope",
        "other",
        note="theory of diffusion-generated distributions",
    ),
    Paper(
        "Generative Sliced MMD Flows with Riesz Kernels",
        "not implemented",
        "diffusion",
        note="sliced MMD flows with Riesz kernels are not built",
    ),
    Paper(
        "A Survey of Quantization Methods for Efficient Neural Network Inference",
        "out of scope",
        "other",
        note="network quantisation (survey)",
    ),
    Paper(
        "Estimation of Non-Crossing Quantile Regression Process with Deep ReQU Neural Networks",
        "out of scope",
        "other",
        note="quantile regression",
    ),
    Paper(
        "Text2PDE: Latent Diffusion Models for Accessible Physics Simulation",
        "not implemented",
        "diffusion",
        note="latent diffusion for physics simulation from text is not built",
    ),
    Paper(
        "Data augmentation and feature selection for automatic model recommendation in computational physics",
        "out of scope",
        "other",
        note="model recommendation in computational physics",
    ),
    Paper("GRAND: Graph Neural Diffusion", "out of scope", "other", note="graph neural networks"),
    Paper(
        "CFDBench: A Large-Scale Benchmark for Machine Learning Methods in Fluid Dynamics",
        "not implemented",
        "operators",
        note="no CFDBench loader (jaxsolve.data reads the FNO .mat files, PDEBench and the Well)",
    ),
    Paper(
        "PFGM++: Unlocking the Potential of Physics-Inspired Generative Models",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.fewstep.pfgmpp_loss",
            "jaxsolve.diffusion.fewstep.pfgmpp_perturb",
            "jaxsolve.diffusion.fewstep.pfgmpp_prior",
            "jaxsolve.diffusion.fewstep.pfgmpp_radius",
            "jaxsolve.diffusion.fewstep.pfgmpp_sigma",
        ),
        note="PFGM++'s perturbation kernel, training loss, prior and the r = sigma sqrt(D) alignment",
    ),
    Paper(
        "DARTS+: Improved Differentiable Architecture Search with Early Stopping",
        "out of scope",
        "other",
        note="neural architecture search",
    ),
    Paper(
        "Effectively Unbiased FID and Inception Score and where to find them",
        "out of scope",
        "other",
        note="image-generation metrics",
    ),
    Paper(
        "Error Classification of Large Language Models on Math Word Problems: A Dynamically Adaptive Framework",
        "out of scope",
        "other",
        note="LLM evaluation",
    ),
    Paper(
        "Detecting Errors in a Numerical Response via any Regression Model",
        "out of scope",
        "other",
        note="error detection in regression",
    ),
    Paper(
        "Bridging Discrete and Backpropagation: Straight-Through and Beyond",
        "out of scope",
        "other",
        note="gradient estimators for discrete variables",
    ),
    Paper(
        "SGD Implicitly Regularizes Generalization Error",
        "out of scope",
        "other",
        note="learning theory (SGD)",
    ),
    Paper(
        "Gradients are Not All You Need",
        "out of scope",
        "other",
        note="analysis of gradients through chaotic dynamics",
    ),
    Paper(
        "The Optimality of Kernel Classifiers in Sobolev Space",
        "out of scope",
        "other",
        note="learning theory (kernel classifiers)",
    ),
    Paper(
        "Forward Learning of Graph Neural Networks",
        "out of scope",
        "other",
        note="graph neural networks",
    ),
    Paper(
        "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.flow_matching_loss",
            "jaxsolve.diffusion.reflow_pairs",
            "jaxsolve.diffusion.straightness",
            "jaxsolve.diffusion.generate",
            "jaxsolve.diffusion.FlowSchedule",
        ),
        note="rectified flow: the linear-interpolant schedule, the straight-path flow-matching loss, reflow couplings and the straightness measure",
        aliases=("Flow Straight and Fast",),
    ),
    Paper(
        "Convergent Graph Solvers",
        "implemented",
        "implicit",
        names=("jaxsolve.implicit.ConvergentGraphSolver",),
        note="the convergent graph solver: a contractive fixed-point layer on graphs",
    ),
    Paper(
        "Score-Based Generative Modeling through Stochastic Differential Equations",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.VESchedule",
            "jaxsolve.diffusion.LinearVPSchedule",
            "jaxsolve.diffusion.EulerMaruyama",
            "jaxsolve.diffusion.PredictorCorrector",
            "jaxsolve.ode.log_likelihood",
        ),
        note="the VE and VP SDEs, the reverse-SDE sampler, the predictor-corrector sampler and probability-flow likelihoods",
        aliases=("Score-Based Generative Modeling through SDEs",),
    ),
    Paper(
        "Toward smart composites: small-scale, untethered prediction and control for soft sensor/actuator systems",
        "out of scope",
        "other",
        note="soft robotics",
    ),
    Paper(
        "diffGrad: An Optimization Method for Convolutional Neural Networks",
        "out of scope",
        "other",
        note="optimisers for CNNs",
    ),
    Paper(
        "Efficient and Modular Implicit Differentiation",
        "implemented",
        "implicit",
        names=(
            "jaxsolve.implicit.custom_root",
            "jaxsolve.implicit.ImplicitDiff",
            "jaxsolve.implicit.ImplicitHypergradient",
        ),
        note="implicit differentiation from optimality conditions (custom_root), in fixed points, roots and bilevel problems",
    ),
    Paper(
        "ODICE: Revealing the Mystery of Distribution Correction Estimation via Orthogonal-gradient Update",
        "out of scope",
        "other",
        note="offline reinforcement learning",
    ),
    Paper(
        "Improving the Training of Rectified Flows",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.u_shaped_times",
            "jaxsolve.diffusion.pseudo_huber",
            "jaxsolve.diffusion.flow_matching_loss",
        ),
        note="the U-shaped time distribution and the pseudo-Huber metric for (re)flow training",
    ),
    Paper(
        "Learning Neural Constitutive Laws From Motion Observations for Generalizable PDE Dynamics",
        "out of scope",
        "other",
        note="differentiable physics simulation (learned constitutive laws)",
    ),
    Paper(
        "What's in a Prior? Learned Proximal Networks for Inverse Problems",
        "not implemented",
        "implicit",
        note="learned proximal networks for inverse problems are not built",
    ),
    Paper(
        "MRS: A Fast Sampler for Mean Reverting Diffusion based on ODE and SDE Solvers",
        "not implemented",
        "diffusion",
        note="fast samplers for mean-reverting diffusion are not built",
    ),
    Paper(
        "BiPer: Binary Neural Networks using a Periodic Function",
        "out of scope",
        "other",
        note="binary neural networks",
    ),
    Paper(
        "Derivative-Free Guidance in Continuous and Discrete Diffusion Models with Soft Value-Based Decoding",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.inverse.SVDD",
            "jaxsolve.diffusion.inverse.WeightedSVDD",
            "jaxsolve.diffusion.inverse.weighted_sample",
        ),
        note="soft value-based decoding around any stochastic solver, and an importance-weighted variant (continuous diffusion only)",
    ),
    Paper(
        "Stochastic Policy Gradient Methods: Improved Sample Complexity for Fisher-non-degenerate Policies",
        "out of scope",
        "other",
        note="reinforcement learning",
    ),
    Paper(
        "Improving equilibrium propagation without weight symmetry through Jacobian homeostasis",
        "out of scope",
        "other",
        note="equilibrium propagation (biologically plausible learning)",
    ),
    Paper(
        "Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.fewstep.rectified_pairs",
            "jaxsolve.diffusion.dsm_loss",
            "jaxsolve.diffusion.edm_loss",
            "jaxsolve.diffusion.eps_loss",
            "jaxsolve.diffusion.x0_loss",
            "jaxsolve.diffusion.v_loss",
        ),
        note="the model's own (noise, sample) couplings and training on them through every loss's noise option",
    ),
    Paper(
        "Policy Evaluation and Temporal-Difference Learning in Continuous Time and Space: A Martingale Approach",
        "out of scope",
        "other",
        note="reinforcement learning",
    ),
    Paper(
        "The Monge Gap: A Regularizer to Learn All Transport Maps",
        "out of scope",
        "other",
        note="optimal transport maps",
    ),
    Paper(
        "RARTS: An Efficient First-Order Relaxed Architecture Search Method",
        "out of scope",
        "other",
        note="neural architecture search",
    ),
    Paper(
        "Bilevel Optimization under Unbounded Smoothness: A New Algorithm and Convergence Analysis",
        "not implemented",
        "implicit",
        note="bilevel optimisation under unbounded smoothness is not built",
    ),
    Paper(
        "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
        "out of scope",
        "other",
        note="optimisers (adaptive batch sizes)",
    ),
    Paper(
        "How Over-Parameterization Slows Down Gradient Descent in Matrix Sensing: The Curses of Symmetry and Initialization",
        "out of scope",
        "other",
        note="learning theory (matrix sensing)",
    ),
    Paper(
        "Bidirectional Learning for Offline Model-based Biological Sequence Design",
        "out of scope",
        "other",
        note="biological sequence design",
    ),
    Paper(
        "Generating Private Synthetic Data with Genetic Algorithms",
        "out of scope",
        "other",
        note="differentially private synthetic data",
    ),
    Paper(
        "Neural Tangent Kernel: Convergence and Generalization in Neural Networks",
        "out of scope",
        "other",
        note="learning theory (neural tangent kernel)",
    ),
    Paper(
        "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps",
        "implemented",
        "diffusion",
        names=(
            "jaxsolve.diffusion.TimeShift",
            "jaxsolve.diffusion.shifted_sigma",
        ),
        note="per-sample time shifting around any solver",
    ),
)


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in text)


def _link(name: str) -> str:
    # Shown without the package prefix; the reference is the public path mkdocs-autorefs knows.
    shown = name.removeprefix("jaxsolve.")
    return f"[`{shown}`][{name}]"


def _entry(paper: Paper) -> list[str]:
    lines = [f"- **{_escape(paper.title)}** — {_escape(paper.note)}."]
    if paper.names:
        lines.append("  " + ", ".join(_link(n) for n in paper.names))
    return lines


def _sorted(papers) -> list[Paper]:
    return sorted(papers, key=lambda p: p.title.casefold())


def render_markdown(papers: tuple[Paper, ...] | None = None) -> str:
    """The seed-paper page (Markdown for the docs site) for ``papers`` (default :data:`PAPERS`).

    Summary counts first (by status, then by pillar), then one section per pillar with its papers
    grouped by status, each title followed by its note and its names as autoref links, and last
    the papers outside jaxsolve's pillars. Titles are sorted within a group, so the page depends
    on the data only, not on its order.
    """
    papers = PAPERS if papers is None else tuple(papers)
    count = {s: sum(p.status == s for p in papers) for s in STATUSES}
    lines = [
        "# Seed papers",
        "",
        f"jaxsolve grew from a list of {len(papers)} seed papers. This page lists every one with "
        "the public names that implement it, or says why nothing does. It is generated from "
        "`jaxsolve/_papers.py` by `python scripts/gen_papers_page.py` (do not edit it by hand); "
        "`tests/test_papers.py` checks that it is current, that every listed name is public and "
        "that its docstring names the paper.",
        "",
        "| status | papers |",
        "| --- | ---: |",
    ]
    lines += [f"| {s} | {count[s]} |" for s in STATUSES]
    lines += [f"| **total** | **{len(papers)}** |", ""]
    in_scope = [k for k in PILLARS if k != "other"]
    lines += [
        "| pillar | implemented | partly | not implemented |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in in_scope:
        row = [sum(p.pillar == key and p.status == s for p in papers) for s in STATUSES[:3]]
        lines.append(f"| {PILLARS[key]} | " + " | ".join(str(n) for n in row) + " |")
    lines.append("")
    for key in PILLARS:
        group = [p for p in papers if p.pillar == key]
        if not group:
            continue
        heading = PILLARS[key] + (" (out of scope)" if key == "other" else "")
        lines += [f"## {heading}", ""]
        for status in STATUSES:
            members = _sorted(p for p in group if p.status == status)
            if not members:
                continue
            if key != "other":
                lines += [f"### {_STATUS_HEADINGS[status]}", ""]
            for paper in members:
                lines += _entry(paper)
            lines.append("")
    return "\n".join(lines)


def default_page_path() -> Path:
    """``docs/papers.md`` of the checkout this module sits in."""
    return Path(__file__).resolve().parents[1] / "docs" / "papers.md"


def main(argv: list[str] | None = None) -> int:
    """Write the page (or, with ``--check``, exit 1 when the file on disk differs)."""
    parser = argparse.ArgumentParser(description="Write docs/papers.md from jaxsolve._papers.")
    parser.add_argument("--out", type=Path, default=default_page_path())
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render_markdown()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"{args.out} is out of date: run python scripts/gen_papers_page.py")
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(PAPERS)} papers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
