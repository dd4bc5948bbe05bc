"""shipit: take an LLM from one box to production traffic.

The package is layered (see docs/architecture.md): ``core`` at the bottom, pure ``policy`` and
``capacity`` above it, the embedded ``engine``, live ``services``, servers, and the ``cli``
on top. Importing this package has no side effects.
"""

__version__ = "0.1.0"
