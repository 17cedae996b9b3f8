"""Field extraction: JSON-Schema task declarations, value-to-span alignment, span tagging and decoding."""
