"""The one exception type that reaches the user as a single clear line."""


class UserError(Exception):
    """Bad input or an unmet precondition: printed as one line, no traceback.

    The message names the file, field or flag at fault and says how to fix it.
    """
