"""Python SDK for shipit and any OpenAI-compatible endpoint."""
