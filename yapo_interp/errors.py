"""Errors a user can fix. Commands print their message on one line, without a traceback.

This module is a leaf: it imports nothing from ``yapo_interp``, so every other module can import
it (``tests/test_layering.py`` checks)."""


class UserError(ValueError):
    """Bad input from the user (flag, file, row); the message names the problem and the fix."""


class DatasetError(UserError):
    """A dataset file or row is malformed; the message names the file, the row and the problem."""


class ModelLoadError(RuntimeError):
    """A model or SAE could not be loaded; the message says why and what to do instead."""


__all__ = ["DatasetError", "ModelLoadError", "UserError"]
