"""Evaluation of specialists on held-out data: metrics and their printed reports."""
