"""Deployment artifacts: Kubernetes manifests and container build files, rendered as data."""
