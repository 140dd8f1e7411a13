"""The GendiffError family: every user-facing failure names the file, field or value at fault."""


class GendiffError(Exception):
    """Base class; the CLI prints it as `gendiff: error: <message>` and exits with status 2."""


class ConfigError(GendiffError):
    """An argument or configuration value is out of range or inconsistent."""


class DataError(GendiffError):
    """Input data is missing, unreadable or malformed; the message names the file and field or line."""


class TrainingError(GendiffError):
    """Training cannot go on (for example repeated non-finite losses)."""
