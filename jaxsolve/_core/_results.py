"""Result codes shared by every driver (sampler, fixed point, rollout, training).

A failure found at run time (non-convergence, a NaN) is reported as one of these codes in the
returned object rather than raised, because traced code cannot raise. ``throw=True`` options turn a
non-successful code into an error through :func:`equinox.error_if`.
"""

import equinox as eqx


class RESULTS(eqx.Enumeration):
    """Outcome of a solve. Compare with ``==``; ``RESULTS.successful`` is the only good one."""

    successful = ""
    max_steps_reached = "The maximum number of steps was reached before convergence."
    nonfinite = "A NaN or infinity appeared in the state or in a model output."
    linear_solve_failed = "A linear solve did not converge."
    backward_failed = "The backward (adjoint / implicit-gradient) solve did not converge."
    step_size_too_small = "The adaptive step size fell below its minimum."
    diverged = "The iteration diverged: the residual grew far beyond its initial size."
    solver_step_failed = "A solver step failed (an implicit stage's root find did not converge)."
    invalid_grid = (
        "The grid sigmas is invalid: it must be finite, positive at index 0, strictly decreasing "
        "until its first 0 and all zeros after it (a traced grid is checked when it runs)."
    )
