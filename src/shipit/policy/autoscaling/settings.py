"""What the autoscaling and lifecycle policies run on, derived from a deployment's settings.

One function per derivation, shared by the live autoscaler and the simulator so both run the
policies on the same settings: ``effective_config`` (the ``autoscaling:`` block, or a fixed
fleet's ``min = max = replicas``) and ``lifecycle_config`` (startup and drain timeouts). Pure.
"""

from __future__ import annotations

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import DeploymentConfig
from shipit.policy.lifecycle import LifecycleConfig


def effective_config(deployment: DeploymentConfig) -> AutoscalingConfig | None:
    """What the loop runs on: the ``autoscaling:`` block (with the deployment's
    ``startup_timeout_s`` unless the block sets one); for a fixed fleet of local replicas
    ``min = max = replicas`` (the same loop then only restarts crashed replicas and replaces
    ones that never become ready); nothing for a deployment of external endpoints only."""
    a = deployment.autoscaling
    if a is not None:
        if "startup_timeout_s" in a.model_fields_set:
            return a
        # One startup timeout: the deployment's, unless the block sets its own.
        return a.model_copy(update={"startup_timeout_s": deployment.startup_timeout_s})
    if deployment.replicas == 0:
        return None
    n = deployment.replicas
    return AutoscalingConfig(
        min_replicas=n, max_replicas=n, startup_timeout_s=deployment.startup_timeout_s
    )


def lifecycle_config(
    deployment: DeploymentConfig, scaling: AutoscalingConfig | None = None
) -> LifecycleConfig:
    """The lifecycle policy's settings: the startup timeout of the autoscaling settings the
    loop runs on (``scaling``, else the effective ones), and the deployment's drain timeout."""
    scaling = scaling or effective_config(deployment)
    startup_s = scaling.startup_timeout_s if scaling is not None else deployment.startup_timeout_s
    return LifecycleConfig(startup_timeout_s=startup_s, drain_timeout_s=deployment.drain_timeout_s)
