"""HTTP-flavoured user errors of the web app: each is a :class:`~sac.errors.SACError` with the status it maps to.

The app turns any SACError into ``{"detail": message}`` with ``status`` (400 for a plain SACError: the Editor's
bad-input errors, e.g. a click outside the image)."""

from __future__ import annotations

from sac.errors import SACError


class WebError(SACError):
    status = 400


class NotFound(WebError):
    status = 404


class Busy(WebError):
    """The session's automatic segmentation is still running (or its image is being opened)."""

    status = 409


class NoImage(WebError):
    status = 409


class Evicted(WebError):
    """The session was dropped to stay within the memory budget; the client must open its image again."""

    status = 410


class TooLarge(WebError):
    status = 413


class Unsupported(WebError):
    status = 415
