"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback.

    Raise it with a message that says what is wrong and how to fix it.
    """
