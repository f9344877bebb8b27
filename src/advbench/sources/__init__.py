"""Input sources, registered by kind in ``advbench.sources.base.SOURCES``.

The built-in sources register when imported; ``advbench.config`` imports them. This package
itself stays light so that ``advbench.sources.reports`` can be used without pandas.
"""
