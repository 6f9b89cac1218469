import jax
import pytest
from hypothesis import HealthCheck, settings

# JAX compiles on first use, so a Hypothesis example can take far longer than the next one.
settings.register_profile(
    "jaxsolve",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("jaxsolve")


@pytest.fixture
def x64():
    """Run a test in float64 (parity and convergence tests need it)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
