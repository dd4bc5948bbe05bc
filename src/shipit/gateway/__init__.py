"""The gateway server: OpenAI-compatible front door in front of the replicas."""
