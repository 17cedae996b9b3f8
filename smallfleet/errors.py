"""User-facing errors: each carries one clear message and maps to a non-zero exit."""


class SmallfleetError(Exception):
    """An error caused by the user's input or setup, reported without a traceback."""


class ConfigError(SmallfleetError):
    """A fleet spec or setting is invalid; the message names the file and key."""


class DataError(SmallfleetError):
    """A data file is malformed or fails validation; the message names file and line."""


class ModelNotFoundError(SmallfleetError):
    """A base model reference matched nothing local, packaged or on the hub."""


class SpecialistError(SmallfleetError):
    """A specialist folder is missing, broken, or would be overwritten."""
