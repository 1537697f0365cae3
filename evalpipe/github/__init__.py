"""The only package that talks to GitHub: keep one sticky comment per pull request up to date.

:mod:`~evalpipe.github.client` is the transport (four REST calls over ``urllib``, the token
kept out of every message), :mod:`~evalpipe.github.sticky` the marker and the upsert.
"""

from evalpipe.github.client import GitHubClient, Response, Upserted, redact
from evalpipe.github.sticky import MARKER_NAME, marker, post_comment

__all__ = [
    "MARKER_NAME",
    "GitHubClient",
    "Response",
    "Upserted",
    "marker",
    "post_comment",
    "redact",
]
