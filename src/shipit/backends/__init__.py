"""Where replicas run: local processes, Kubernetes, external endpoints."""
