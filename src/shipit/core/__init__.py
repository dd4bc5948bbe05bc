"""Lowest layer: ids, errors and the clock. Imports nothing but the standard library."""
