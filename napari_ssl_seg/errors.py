"""Errors that the CLI and the GUI turn into one clear line for the user.

Anything raised as :class:`InputError` is the user's input being unusable
(corrupt file, wrong dimensionality, mismatched geometry, ...): the CLI prints
``error: <message>`` and exits with status 2, the GUI shows a notification.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """The input cannot be used; the message is shown to the user as is."""


class ProjectError(InputError):
    """The project folder or database cannot be used as asked."""
