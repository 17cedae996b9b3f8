"""Base models: where their weights come from and the networks built on them."""

from smallfleet.models.catalog import PackagedModel
from smallfleet.models.resolve import ResolvedModel, packaged_models, resolve_base_model

__all__ = ["PackagedModel", "ResolvedModel", "packaged_models", "resolve_base_model"]
