"""What a prompt is and what happens to it: settings, data, spec, evaluation, gating,
optimization, snapshots and the typed results. Never imports pytest.
"""
