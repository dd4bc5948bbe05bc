"""Discrete-event fleet simulator running the same policies as the live system."""
