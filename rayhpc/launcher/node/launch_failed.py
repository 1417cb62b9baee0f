"""The node program's one failure type."""


class LaunchFailed(Exception):
    """A failure of the launch itself (not of the driver): reported in `error`, exit 1."""
