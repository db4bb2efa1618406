"""One exception tree: everything the tool raises on purpose is an AggregatorError.

The CLI turns any of these into one line on stderr and exit status 1; a source that fails
during a run becomes a value in the run report instead (see pipeline.run_once).
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base of every error the tool raises on purpose; str() is the one-line message."""


class ConfigError(AggregatorError):
    """feeds.yaml (or an environment override) is missing, malformed or invalid."""


class FetchError(AggregatorError):
    """A source could not be fetched: network, HTTP status, size or time limits, policy."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ParseError(AggregatorError):
    """A fetched document could not be read as a feed."""


class StorageError(AggregatorError):
    """The database could not be opened, migrated, locked or written."""


class LockedError(StorageError):
    """Another run holds the run lock."""


class ModelError(AggregatorError):
    """A model file is missing, corrupt, tampered with or from other library versions."""


class ReviewError(AggregatorError):
    """A review decision could not be applied (unknown item, bad section, nothing to undo)."""


class ExportError(AggregatorError):
    """An export could not be written."""
