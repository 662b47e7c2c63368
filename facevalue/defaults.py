"""The library's defaults, in a module light enough for the CLI to read at import time.

``facevalue --help`` shows these, and the library functions take them as defaults, so the
two cannot drift apart.
"""

DEVICES = ("auto", "cpu", "cuda")
FACES_MODES = ("main", "all")  # main: each photo's largest face; all: every face
DEFAULT_BATCH_SIZE = 64  # faces per classifier call
DEFAULT_CHUNK_SIZE = 256  # photos per chunk: classified together, saved in one transaction
DEFAULT_MAX_PIXELS = 100_000_000  # larger images are too_large, never decoded
DEFAULT_FPS = 1.0  # video frames sampled a second
