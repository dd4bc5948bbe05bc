"""Discrete-event fleet simulator running the same policy code as the live system.

``fleet`` is the event loop of one deployment (replica lifecycles, health probes, autoscaler
ticks, replica deaths); ``gateway`` takes each request through the gateway's path (admission,
routing, hold, retries, ejection); ``drivers`` holds every call into
the live policies (routing, admission, retries, outliers, health, autoscaling) and records each
decision in a ``DecisionLog``; ``replica`` steps one replica with the engine's own scheduler and
block manager, timed by ``engine.sim_timing``; ``policies`` are the scaling policies compared
(ours, a fixed fleet, Knative-style); ``results`` the trace and result records.

``regions`` is the multi-region fleet simulator (thousands of GPUs over hours: planes, pools,
pre-emptions, GPU failures, failover), with ``fleet_model`` (its demand and queue models: no
engine steps at that scale), ``fleet_traffic`` (routing a tick's arrivals), ``fleet_replicas``
(one plane's replicas, counts and spend), ``fleet_setup`` and ``fleet_report``. Nothing here
sleeps, reads a clock or does IO.
"""
