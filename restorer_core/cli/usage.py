"""Exit codes and the one error a user's mistake raises (bad arguments or setup)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad arguments or setup, found before anything was written (exit code 2)."""
