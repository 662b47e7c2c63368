"""facevalue: emotion scores from photos of company executives."""

__version__ = "0.1.0"
