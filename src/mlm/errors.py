"""Errors the user can fix. The CLI prints them as one message, without a traceback."""


class UserInputError(ValueError):
    """Bad input from the user (a file, a parameter, a config).

    The message names the offending file or parameter and says how to fix it.
    """
