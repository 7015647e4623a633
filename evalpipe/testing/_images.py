"""A real image small enough to inline in any test: for sending images to the fake (or a vendor)."""

from __future__ import annotations

import struct
import zlib


def tiny_png() -> bytes:
    """A valid 1x1 PNG (one green pixel), built from its chunks."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # width, height, bit depth 8, RGB
    pixels = zlib.compress(b"\x00\x00\xff\x00")  # filter byte, then one RGB pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
