"""Read medical images into one in-memory form: array + spacing + metadata."""

from medsight.io.codecs import register_decoders
from medsight.io.images import MedicalImage, read_image, sniff_format

register_decoders()  # 12-bit JPEG Extended via GDCM, for every pixel read in this process

__all__ = ["MedicalImage", "read_image", "sniff_format"]
