"""Opening inputs: plain or compressed files (gzip, bzip2, xz, found by magic bytes) or stdin ("-")."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lark.report.errors import InputError

_MAGIC = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


@contextlib.contextmanager
def open_binary(path: str | Path, progress: Any = None) -> Iterator[tuple[BinaryIO, str]]:
    """Yield (binary stream, label). Rotated logs are often compressed, so that is transparent.

    The progress indicator (if any) is told the file's size and how to read the position of the
    underlying (compressed) file, so its percentage is right for compressed inputs too.
    """
    label = str(path)
    if label == "-":
        if progress is not None:
            progress.start("stdin")
        yield sys.stdin.buffer, "stdin"
        return
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the (possibly) wrapping stream
    except OSError as err:
        raise InputError(label, f"cannot open: {err.strerror}") from err
    try:
        head = raw.read(6)
        raw.seek(0)
        stream: BinaryIO = raw
        for magic, opener in _MAGIC:
            if head.startswith(magic):
                stream = opener(raw, "rb")  # type: ignore[assignment]
                break
        if progress is not None:
            progress.start(os.path.basename(label), os.fstat(raw.fileno()).st_size, raw.tell)
        try:
            yield stream, label
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise InputError(label, f"read error: {err}") from err
        finally:
            if stream is not raw:
                stream.close()
    finally:
        raw.close()
