"""Command-line interface: one module per command; thin: parse, call, render."""
