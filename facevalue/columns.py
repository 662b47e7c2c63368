"""The output tables' column names and the values of their ``status`` column, defined once.

Discovery, decoding, detection and the job each decide some statuses; the schemas
(``facevalue.write``), the aggregation, the report and the README read these names.
"""

from facevalue.contract import LABELS
from facevalue.errors import FacevalueError

OK = "ok"  # scored: at least one face found and classified
NO_FACE = "no_face"  # decoded, but the detector found no face
EMPTY = "empty"  # a file of 0 bytes
UNREADABLE = "unreadable"  # corrupt, truncated, not an image, or not a regular file
TOO_LARGE = "too_large"  # over the pixel or byte limit; never decoded
MISSING = "missing"  # a manifest row whose photo does not exist
UNLISTED = "unlisted"  # a photo the manifest does not list: not scored
ERROR = "error"  # an unexpected failure on one photo; the run goes on (and it is not saved)
ALL = (OK, NO_FACE, EMPTY, UNREADABLE, TOO_LARGE, MISSING, UNLISTED, ERROR)

# Per-face table, in order: these, the manifest's ids after company, LABELS, EMOTION,
# GEOMETRY with --geometry, and PHOTO_SHA256 last.
PHOTO = ("path", "company")
RESULT = ("status", "error")
BOX = ("face", "faces_in_photo", "x", "y", "w", "h")  # int32
FACE_SCORE = "face_score"
EMOTION = "emotion"
GEOMETRY = ("fwhr", "yaw", "pitch", "roll", "eye_distance", "sharpness", "landmark_score",
            "geometry_ok")  # float32, the last a bool
PHOTO_SHA256 = "photo_sha256"
# Per-company table: company, ids, COUNTS, LABELS (means), SCORES, then with --geometry
# GEOMETRY_SCORES and GEOMETRY_COUNTS.
COUNTS = ("photos", "videos", "faces", "failed")
SCORES = ("happiness_share", "positivity")
GEOMETRY_COUNTS = ("geometry_faces",)
GEOMETRY_SCORES = ("fwhr",)
# Video frames' rows add TIME (float64 seconds from the first frame) and TRACK (int32: one
# person across frames, 0 the main track, the one seen most), after RESULT. Per-video
# table: path, company, ids, RESULT (the video's), VIDEO_COUNTS, LABELS (main-track means),
# SCORES, then each label's standard deviation over the main track's frames, label + STD.
TIME = "time"
TRACK = "track"
VIDEO_COUNTS = ("duration", "frames", "frames_with_face", "faces", "main_share")
STD = "_std"
# Per-person table, when the manifest has a PERSON column: person, year when given, the
# manifest ids constant per person, PERSON_COUNTS, LABELS (means), SCORES, then with
# --geometry PERSON_GEOMETRY (fWHR's median over near-frontal faces, and its n).
PERSON = "person"
PERSON_COUNTS = ("photos", "videos", "failed", "main_faces")
PERSON_GEOMETRY = ("fwhr_median", "fwhr_faces")
# Columns a manifest may not use for its ids: a copied-through id would overwrite them.
RESERVED = frozenset({*PHOTO, *RESULT, *BOX, FACE_SCORE, EMOTION, *GEOMETRY, PHOTO_SHA256,
                      *COUNTS, *SCORES, *GEOMETRY_COUNTS, *GEOMETRY_SCORES, *LABELS,
                      TIME, TRACK, *VIDEO_COUNTS, *(label + STD for label in LABELS),
                      *PERSON_COUNTS, *PERSON_GEOMETRY})


class PhotoError(FacevalueError, ValueError):
    """One photo that cannot be scored; ``status`` is its row's status. The run goes on."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
