"""User-facing errors.

Every error a user can cause (bad file, bad setting, missing checkpoint) is raised as a
`Depth2imgError` whose message says what was wrong and what to do. The UI, the API and the CLI
show that message as it is; anything else is a bug and keeps its traceback.
"""


class Depth2imgError(Exception):
    """An error caused by input or setup that the user can fix; the message is shown verbatim."""


class ImageError(Depth2imgError):
    """An image file or upload that cannot be used."""


class WeightsError(Depth2imgError):
    """A checkpoint or weights file that is missing, of the wrong kind, or damaged."""


class SettingsError(Depth2imgError):
    """A setting outside its allowed range or of the wrong type."""


class Interrupted(Depth2imgError):
    """The user stopped the work (A1111's Interrupt) before it finished."""


class AccessDenied(Depth2imgError):
    """Something this server's owner has turned off for remote users, such as downloading models."""
