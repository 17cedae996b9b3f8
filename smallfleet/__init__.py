"""smallfleet: fine-tune small specialists for narrow tasks and serve them locally."""

__version__ = "0.1.0"
