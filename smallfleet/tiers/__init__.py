"""Escalation tiers: `base.py` the Tier interface, its settings and the kind registry; one module per built-in kind."""
