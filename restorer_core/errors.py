"""Error types whose messages tell the user what to do next."""


class RestorerError(Exception):
    """Base class for every error this package raises on purpose."""


class ImageReadError(RestorerError):
    """An input image could not be read (missing, truncated, unsupported)."""


class CheckpointError(RestorerError):
    """A checkpoint is missing, corrupt, unsafe to load, or does not fit the architecture."""


class ModelNotFoundError(CheckpointError):
    """Weights are not on disk and may not be downloaded (offline, or download not enabled)."""


class BankError(RestorerError):
    """A reference bank is empty, corrupt, or was built for another restorer."""


class DetectorError(RestorerError):
    """A face detector backend is unavailable or misconfigured."""


class CancelledError(RestorerError):
    """The run was cancelled by the caller; nothing half-written is left behind."""
