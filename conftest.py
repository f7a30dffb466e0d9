"""Settings shared by every test under tests/ and protocol/."""

from hypothesis import HealthCheck, settings

# The machines that run the suite are small and shared: a slow example is load, not a bug.
# Timing belongs in bench/, so no Hypothesis deadline and no too-slow health check.
settings.register_profile(
    "fl-node",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("fl-node")
