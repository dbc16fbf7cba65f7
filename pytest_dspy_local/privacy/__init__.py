"""Privacy: the in-process egress guard and the audit receipt. Never imports pytest."""
