"""`UserError`: the one base class of every mistake a user can cause and fix.

A bad path, a damaged or mismatched file, a wrong config value or a bad data line raises
a subclass of `UserError` whose message is one sentence naming the problem and the fix.
`kd_jax.main` catches `UserError` (only there) and prints `kd-jax: error: <message>` with
exit status 2; library callers can catch the specific subclasses. It derives from
ValueError so that code checking values keeps its usual `except ValueError`.
"""


class UserError(ValueError):
    """A mistake in the user's input: the message names the problem and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (also a FileNotFoundError)."""


class ConfigError(UserError):
    """A config value kd_jax cannot run with, naming the key and the fix."""
