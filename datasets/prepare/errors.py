"""What goes wrong while preparing a dataset; every message says what to do."""

from __future__ import annotations

from lamm_plugin.errors import UserError


class PrepareError(UserError, RuntimeError):
    """A dataset could not be prepared; the message says what to do."""


class DownloadError(PrepareError):
    """A download failed or is incomplete (a partial ``.part`` file is kept for resuming)."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the expected checksum."""
