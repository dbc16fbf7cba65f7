"""pytest integration: hooks, options, collection, run state, xdist hand-over.

The only layer that imports pytest.
"""

