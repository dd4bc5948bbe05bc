"""The replica server: OpenAI-compatible HTTP over the embedded engine."""
