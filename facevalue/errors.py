"""The one base class of every error a user can cause and fix.

A bad model file, manifest, output path, device or saved results each has its own class,
raised deep in the library; the CLI catches this base once and prints the message as one
line (exit code 1), so a new error class cannot reach the user as a traceback. Library
callers can catch it too, to tell their own mistakes from facevalue's bugs.
"""

from __future__ import annotations


class FacevalueError(Exception):
    """An error the user can fix; its message says what went wrong and what to do."""
