"""Multi-device runs through :mod:`jax.sharding`: data-parallel training and sharded sampling.

:func:`jaxsolve.train.fit` and :func:`jaxsolve.diffusion.sample` take ``mesh=`` and
``data_axis=``: the leading (sample) axis of every minibatch, or of the state being sampled, is
split over that mesh axis and everything else (parameters, optimiser state, EMA, noise grids) is
replicated, so each device works on its share of the samples and XLA inserts the collectives
(the gradient all-reduce). Results equal the one-device run up to floating-point reduction order.

::

    import jax
    from jaxsolve import diffusion as jd, sharding

    mesh = sharding.data_mesh()  # every device, one axis named "data"
    x = sharding.shard_batch(x, mesh)  # optional: sample() shards x itself
    y = jd.sample(denoiser, x, sigmas, jd.DPMSolverPP(order=2), mesh=mesh)

The helpers below are what those drivers use; they are public for user code that builds its own
sharded computations.
"""

from ._core._sharding import axis_size, data_mesh, replicate, shard_batch, to_host

__all__ = ["axis_size", "data_mesh", "replicate", "shard_batch", "to_host"]
