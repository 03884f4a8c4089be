"""Read medical images into one in-memory form: array + spacing + metadata."""

from medsight.io.images import MedicalImage, read_image, sniff_format

__all__ = ["MedicalImage", "read_image", "sniff_format"]
