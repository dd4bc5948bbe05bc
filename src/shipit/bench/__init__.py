"""Load generator, workloads, trace replay, reports and plots."""
