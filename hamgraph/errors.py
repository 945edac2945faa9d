"""Typed errors. The library raises them; only the CLI turns them into one line and an exit code."""


class HamgraphError(Exception):
    """Base class of every error hamgraph raises on purpose."""


class UserInputError(HamgraphError):
    """Bad input from the user (config file, CLI value, unknown name). The CLI exits with 2."""


class ConfigError(UserInputError):
    """A config or sweep file is unreadable or invalid. The message names the file and key."""


class UnknownNameError(UserInputError, KeyError):
    """A dataset / model / metric / norm name that does not exist. The message lists the choices."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetUnavailableError(UserInputError):
    """A dataset cannot be had offline. The message names the missing files and how to get them."""
