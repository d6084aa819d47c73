"""``nurture plan``: placeholder replaced below."""
