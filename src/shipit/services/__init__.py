"""Live loops wiring policies to state: router, registry, autoscaler, rollouts, health, jobs."""
