"""The node program's one failure type."""


class LaunchFailed(Exception):
    """A failure of the launch itself (not of the driver): reported in `error`, exit 1; exit 2
    where the user's input is at fault and only the head could tell (``bad_input``)."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input

    @property
    def exit_code(self) -> int:
        return 2 if self.bad_input else 1
