"""User-facing settings as pydantic models (``extra="forbid"``): loading and validation."""
