"""Loading, validating and splitting labelled data."""

from smallfleet.data.load import Example, load_examples, read_rows
from smallfleet.data.split import holdout_split
from smallfleet.data.validate import ValidationReport, validate_classification

__all__ = ["Example", "ValidationReport", "load_examples", "read_rows", "holdout_split", "validate_classification"]
