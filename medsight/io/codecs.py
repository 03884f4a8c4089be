"""12-bit JPEG Extended (1.2.840.10008.1.2.4.51) through GDCM, as one more pydicom decoder plugin.

pydicom's own GDCM plugin declines JPEG Extended with more than 8 bits per sample, and the one
PyPI plugin that takes it (pylibjpeg-libjpeg) is GPL. GDCM itself (BSD; ``python-gdcm``,
Apache-2.0) ships IJG's 12-bit libjpeg and decodes these streams: pydicom-data's ``JPGExtended.dcm``
and ``JPEG-lossy.dcm`` come out value for value as DCMTK's ``dcmdjpeg`` decodes them. This module
adds that decoder behind pydicom's own (it is asked only when they decline), so ``pixel_array``,
ingest and export all read 12-bit JPEG. ``register_decoders()`` runs when ``medsight.io`` is imported.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pydicom.uid import JPEGExtended12Bit

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeRunner

PLUGIN = "medsight-gdcm12"
DECODER_DEPENDENCIES = {JPEGExtended12Bit: ("gdcm>=3.0.10",)}  # read by pydicom's add_plugin


def is_available(uid: str) -> bool:
    """pydicom's plugin protocol: True if GDCM is importable and ``uid`` is 12-bit JPEG Extended."""
    try:
        import gdcm  # noqa: F401
    except ImportError:
        return False
    return uid == JPEGExtended12Bit


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One 12-bit JPEG Extended frame (a JPEG codestream) decoded into 16-bit little-endian samples."""
    import gdcm

    if runner.bits_stored <= 8:  # pydicom's GDCM and Pillow plugins decode 8-bit streams before us
        raise ValueError("8-bit JPEG Extended is left to pydicom's own plugins")
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    kind = gdcm.PhotometricInterpretation.GetPIType(str(runner.photometric_interpretation))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(kind))
    if runner.samples_per_pixel > 1:
        image.SetPlanarConfiguration(runner.planar_configuration)
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGExtendedProcess2_4))
    # 12 bits allocated picks GDCM's 12-bit libjpeg at once; with 16 it first tries the 16-bit build,
    # which prints "Unsupported JPEG data precision 12" on stderr before falling back. The output
    # is the same either way: 2 bytes per sample.
    bits = runner.bits_stored
    image.SetPixelFormat(
        gdcm.PixelFormat(runner.samples_per_pixel, 12, bits, bits - 1, runner.pixel_representation)
    )
    buffer = image.GetBuffer()  # char* comes back as str
    frame = buffer.encode("utf-8", "surrogateescape") if buffer else b""
    expected = runner.rows * runner.columns * runner.samples_per_pixel * 2
    if len(frame) != expected:
        raise ValueError(f"GDCM returned {len(frame)} bytes for a 12-bit JPEG frame, not {expected}")
    return frame


def register_decoders() -> None:
    """Add the 12-bit JPEG Extended plugin to pydicom's decoder, once per process."""
    from pydicom.pixels import get_decoder

    with contextlib.suppress(ValueError):  # ValueError: added already in this process
        get_decoder(JPEGExtended12Bit).add_plugin(PLUGIN, (__name__, "decode_frame"))
