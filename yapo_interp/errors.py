"""Errors a user can fix. Commands print their message on one line, without a traceback."""

from yapo_interp.models import ModelLoadError


class UserError(ValueError):
    """Bad input from the user (flag, file, row); the message names the problem and the fix."""


class DatasetError(UserError):
    """A dataset file or row is malformed; the message names the file, the row and the problem."""


__all__ = ["DatasetError", "ModelLoadError", "UserError"]
