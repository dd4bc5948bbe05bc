"""Pure decisions: routing, queueing, autoscaling, rollout, health. No IO, no clock reads."""
