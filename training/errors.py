"""The errors a user can cause, and how the command line reports them.

`UsageError` marks a problem with what the user passed (a path, a flag value, the content of their data): the CLI
prints `error: <message>` on one line and exits with status 2. Any other `ValueError`/`OSError` escaping a command is
a runtime error: the same one line, exit status 1. `--debug` or `GPTFORGE_DEBUG=1` shows the traceback instead.
Messages name the value and what would work, since the user sees nothing else.
"""


class UsageError(ValueError):
    """Something the user passed is wrong: name the value and what would work."""
