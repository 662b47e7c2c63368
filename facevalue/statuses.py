"""Every value of the per-face table's ``status`` column, defined once.

Discovery, decoding, detection and the pipeline each decide some of them; the aggregation,
the report and the README read them all.
"""

OK = "ok"  # scored: at least one face found and classified
NO_FACE = "no_face"  # decoded, but the detector found no face
EMPTY = "empty"  # a file of 0 bytes
UNREADABLE = "unreadable"  # corrupt, truncated, not an image, or not a regular file
TOO_LARGE = "too_large"  # over the pixel or byte limit; never decoded
MISSING = "missing"  # a manifest row whose photo does not exist
UNLISTED = "unlisted"  # a photo the manifest does not list: not scored
ERROR = "error"  # an unexpected failure on one photo; the run goes on (and it is not saved)
ALL = (OK, NO_FACE, EMPTY, UNREADABLE, TOO_LARGE, MISSING, UNLISTED, ERROR)


class PhotoError(ValueError):
    """One photo that cannot be scored; ``status`` is its row's status. The run goes on."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
