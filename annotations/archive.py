"""Safe inspection of dataset uploads delivered as zip archives.

A scientist uploads a zip holding images, either as an ImageFolder tree
(``[top/][split/]<class>/<file>``) or together with a CSV/JSON manifest. This module
decides, without extracting anything to disk, which images can be imported and why
the others cannot. The Django service that calls it owns storage and database rows,
so this module must stay free of Django imports and side effects.

Two kinds of failure are distinguished:

* :class:`ArchiveRejected` - the upload as a whole is refused (unsafe or malformed
  zip, resource limits exceeded, unusable manifest). Nothing should be imported.
* :class:`FileError` - one file cannot be imported; the rest of the upload is fine.
  Every file examined ends up either accepted or with exactly one error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import stat
import struct
import unicodedata
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, TypeAlias

from PIL import Image, UnidentifiedImageError

__all__ = [
    "ERROR_CODES",
    "SUPPORTED_FORMATS",
    "AcceptedImage",
    "ArchiveLimits",
    "ArchiveRejected",
    "FileError",
    "ScanResult",
    "iter_image_bytes",
    "read_image_bytes",
    "scan_archive",
]

ZipSource: TypeAlias = str | os.PathLike[str] | IO[bytes]
# A manifest uploaded beside the zip: its bytes, a path, or an open binary file (read from its
# current position, left open). It is streamed, never read whole.
ManifestSource: TypeAlias = bytes | str | os.PathLike[str] | IO[bytes]

# Per-file error codes. ``unsafe_path`` is deliberately absent: an unsafe entry name
# means the archive was crafted or broken, so the whole upload is rejected instead.
NOT_IMAGE = "not_image"
CORRUPT_IMAGE = "corrupt_image"
DECOMPRESSION_BOMB = "decompression_bomb"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_IMAGE = "duplicate_image"
MISSING_FILE = "missing_file"
MISSING_LABEL = "missing_label"
BAD_SPLIT = "bad_split"
BAD_METADATA = "bad_metadata"
ERROR_CODES: frozenset[str] = frozenset(
    {
        NOT_IMAGE,
        CORRUPT_IMAGE,
        DECOMPRESSION_BOMB,
        UNKNOWN_LABEL,
        DUPLICATE_IMAGE,
        MISSING_FILE,
        MISSING_LABEL,
        BAD_SPLIT,
        BAD_METADATA,
    }
)

# Pillow format ids. Restricting Image.open to these keeps exotic (and less audited)
# decoders such as PSD or EPS away from untrusted input.
SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

# Folder names that mark a split level in the ImageFolder layout. Callers may allow
# extra split names; those are recognised as well (see ``_split_folder_names``).
SPLIT_FOLDER_NAMES: frozenset[str] = frozenset({"train", "test", "val", "validation", "deployment"})
DEPLOYMENT_SPLIT = "deployment"
# "val" and "validation" are used interchangeably in the wild; map one onto the other
# when only one of them is an allowed split for this dataset.
_SPLIT_ALIASES: Mapping[str, str] = {"val": "validation", "validation": "val"}

_MANIFEST_NAMES: Mapping[str, str] = {"manifest.csv": "csv", "manifest.json": "json"}
_IGNORED_BASENAMES = frozenset({"thumbs.db", "desktop.ini"})
_MACOS_METADATA_DIR = "__MACOSX"
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_SUPPORTED_COMPRESSION = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_ENCRYPTED_FLAG = 0x1
_READ_CHUNK = 1024 * 1024
# Used to tell a damaged image (known signature, unreadable body) from a file that was
# never an image: Pillow reports both as "cannot identify image file".
_IMAGE_SIGNATURES: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


class ArchiveRejected(ValueError):
    """The whole upload is refused; nothing from it may be imported.

    ``field`` names the part of the upload request at fault (``"archive"``,
    ``"manifest"`` or ``"manifest_format"``) so the caller can attach the message to
    the right form/serializer field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ArchiveLimits:
    """Resource limits applied before and while reading an archive."""

    max_uncompressed_bytes: int = 2 * 1024**3
    max_files: int = 200_000
    # Decompression-bomb threshold per image. Pillow's own global limit
    # (Image.MAX_IMAGE_PIXELS) still applies on top and is not changed here, because
    # mutating it would affect other code running in the same process.
    max_image_pixels: int = 40_000_000
    # Per entry: file_size / compress_size.
    max_compression_ratio: int = 200
    # Small entries cannot do damage on their own (their total is capped by
    # max_uncompressed_bytes) yet legitimately compress very well, e.g. a 128x128
    # all-black BMP mask. Skipping the ratio check for them avoids refusing real data.
    ratio_check_min_bytes: int = 1024 * 1024
    # Each image is held in memory whole, so one entry must stay well below the worker's
    # memory even when the archive total is within max_uncompressed_bytes.
    max_file_bytes: int = 256 * 1024**2
    max_manifest_bytes: int = 64 * 1024**2


@dataclass(frozen=True)
class FileError:
    """Why one file (or manifest row) was not imported."""

    path: str
    code: str
    message: str


@dataclass(frozen=True)
class AcceptedImage:
    """An image that passed every check; ``path`` is the exact zip entry name."""

    path: str
    label: str  # "" only for unlabelled deployment samples
    split: str
    metadata: dict[str, Any]
    sha256: str
    width: int
    height: int
    format: str  # one of SUPPORTED_FORMATS
    size_bytes: int


@dataclass
class ScanResult:
    """Outcome of :func:`scan_archive`; lists are in path order."""

    layout: str  # "imagefolder" | "manifest"
    accepted: list[AcceptedImage]
    errors: list[FileError]
    # Files present in the zip but not examined: in the manifest layout, files that no
    # row refers to. Hidden/OS junk files are skipped silently and not listed here.
    ignored: list[str] = field(default_factory=list)

    def report(self, max_errors: int | None = None) -> dict[str, Any]:
        """JSON-ready summary; ``max_errors`` caps the error list for large uploads."""
        counts = Counter(error.code for error in self.errors)
        shown = self.errors if max_errors is None else self.errors[:max_errors]
        return {
            "layout": self.layout,
            "accepted": len(self.accepted),
            "rejected": len(self.errors),
            "ignored": len(self.ignored),
            "error_counts": dict(sorted(counts.items())),
            "accepted_by_split": dict(sorted(Counter(a.split for a in self.accepted).items())),
            "accepted_by_label": dict(sorted(Counter(a.label for a in self.accepted).items())),
            "errors": [
                {"path": error.path, "code": error.code, "message": error.message}
                for error in shown
            ],
            "errors_truncated": len(shown) < len(self.errors),
        }


@dataclass
class _Item:
    """One file to examine, with everything known before its bytes are read."""

    key: str  # normalised path, used for ordering
    path: str  # what the user sees: zip entry name, or the manifest's path
    info: zipfile.ZipInfo | None = None
    label: str = ""
    split: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (code, message) found without reading


@dataclass
class _ManifestRow:
    where: str  # "line 3" / "item 3", for messages
    path: str
    label: Any
    split: Any
    metadata: dict[str, Any]
    metadata_error: str | None = None


class _EntryUnreadable(Exception):
    """A zip entry's data is damaged; reported per file rather than per archive."""


# --------------------------------------------------------------------------- public API


def check_archive(
    zip_path: ZipSource,
    *,
    labels: Collection[str],
    default_split: str = "train",
    allowed_splits: Collection[str] = ("train", "test", "deployment"),
    manifest: ManifestSource | None = None,
    manifest_format: str | None = None,
    limits: ArchiveLimits = ArchiveLimits(),
) -> int:
    """Everything :func:`scan_archive` refuses as a whole, without decoding any image.

    Reads the central directory and the manifest only, so a web request can call it and
    answer 400 at once. The manifest is streamed and reading stops at row
    ``limits.max_files + 1``, so its size costs no memory. Returns the number of files an
    import would examine.
    """
    with _open_zip(zip_path) as zf:
        _layout, items, _ignored = _plan(
            zf,
            labels=labels,
            default_split=default_split,
            allowed_splits=allowed_splits,
            manifest=manifest,
            manifest_format=manifest_format,
            limits=limits,
        )
    return len(items)


def scan_archive(
    zip_path: ZipSource,
    *,
    labels: Collection[str],
    default_split: str = "train",
    allowed_splits: Collection[str] = ("train", "test", "deployment"),
    manifest: ManifestSource | None = None,
    manifest_format: str | None = None,
    known_hashes: Collection[str] = (),
    limits: ArchiveLimits = ArchiveLimits(),
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Check an uploaded zip and decide which images can be imported.

    Raises :class:`ArchiveRejected` when the upload must be refused as a whole.
    ``progress(done, total)`` is called once before the first file and after each one.
    """
    known = frozenset(h.lower() for h in known_hashes)
    with _open_zip(zip_path) as zf:
        layout, items, ignored = _plan(
            zf,
            labels=labels,
            default_split=default_split,
            allowed_splits=allowed_splits,
            manifest=manifest,
            manifest_format=manifest_format,
            limits=limits,
        )
        accepted, errors = _examine(zf, items, known, limits, progress)
    return ScanResult(layout=layout, accepted=accepted, errors=errors, ignored=ignored)


def _plan(
    zf: zipfile.ZipFile,
    *,
    labels: Collection[str],
    default_split: str,
    allowed_splits: Collection[str],
    manifest: ManifestSource | None,
    manifest_format: str | None,
    limits: ArchiveLimits,
) -> tuple[str, list[_Item], list[str]]:
    """The whole-archive checks and the list of files to examine: (layout, items, ignored)."""
    allowed = frozenset(s.strip().lower() for s in allowed_splits)
    default = _canonical_split(default_split, allowed)
    if default is None:
        # A caller bug, not a user error: the default must be usable.
        raise ValueError(f"default_split {default_split!r} is not in allowed_splits")
    if manifest_format is not None:
        manifest_format = manifest_format.strip().lower()
    if manifest_format is not None and manifest_format not in ("csv", "json"):
        raise ArchiveRejected("manifest_format", f"unsupported format {manifest_format!r}")
    label_lookup = {_nfc(label): label for label in labels}

    infos = zf.infolist()
    _check_structure(infos, limits)
    files = {_entry_key(info.filename): info for info in infos if not _is_dir(info)}
    candidates = sorted(k for k in files if not _is_junk(k))
    ignored: list[str] = []

    manifest_key = None if manifest is not None else _find_manifest(candidates)
    if manifest is not None or manifest_key is not None:
        layout = "manifest"
        base = _common_top(candidates)
        if manifest_key is not None:
            info = files[manifest_key]
            if info.file_size > limits.max_manifest_bytes:
                raise ArchiveRejected(
                    "manifest",
                    f"{info.filename!r} is larger than {limits.max_manifest_bytes} bytes",
                )
            base = manifest_key.rpartition("/")[0] or None
            rows = _read_manifest_entry_rows(
                zf, info, _MANIFEST_NAMES[manifest_key.rsplit("/", 1)[-1].lower()], limits
            )
        else:
            assert manifest is not None
            rows = _read_manifest_rows(manifest, manifest_format, limits)
        items = _manifest_items(rows, files, base, default, allowed, label_lookup)
        claimed = {item.key for item in items if item.info is not None}
        ignored = [files[k].filename for k in candidates if k not in claimed and k != manifest_key]
    else:
        layout = "imagefolder"
        items = _imagefolder_items(candidates, files, default, allowed, label_lookup)

    if not items:
        raise ArchiveRejected("archive", "the archive contains no files to import")
    return layout, items, ignored


def read_image_bytes(
    zip_path: ZipSource,
    path: str,
    *,
    expected_sha256: str | None = None,
    limits: ArchiveLimits = ArchiveLimits(),
) -> bytes:
    """Re-read one accepted entry (``AcceptedImage.path``) with the same safety bounds.

    Opening the zip parses its whole central directory, so for many images prefer
    :func:`iter_image_bytes`, which opens the archive once.
    """
    with _open_zip(zip_path) as zf:
        return _reread(zf, path, expected_sha256, limits)


def iter_image_bytes(
    zip_path: ZipSource,
    images: Iterable[AcceptedImage],
    *,
    limits: ArchiveLimits = ArchiveLimits(),
) -> Iterator[tuple[AcceptedImage, bytes]]:
    """Yield ``(image, bytes)`` one at a time, checking each against its scanned sha256.

    The hash check catches an archive that was replaced between scan and import.
    """
    with _open_zip(zip_path) as zf:
        for image in images:
            yield image, _reread(zf, image.path, image.sha256, limits)


# --------------------------------------------------------------------- archive checks


def _open_zip(zip_path: ZipSource) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        # The caller handed us a bad path; that is a server bug, not a bad upload.
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        struct.error,
    ) as exc:
        raise ArchiveRejected("archive", f"not a valid zip file ({exc})") from exc


def _check_structure(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """Refuse dangerous or oversized archives using only the central directory.

    Runs before any entry is decompressed, so a hostile archive costs us nothing but
    reading its directory.
    """
    if len(infos) > limits.max_files:
        raise ArchiveRejected(
            "archive", f"the archive has {len(infos)} entries, more than {limits.max_files}"
        )
    total = 0
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        _check_entry_name(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveRejected("archive", f"entry {name!r} is a symbolic link")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise ArchiveRejected("archive", f"entry {name!r} is a special file")
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise ArchiveRejected(
                "archive", f"entry {name!r} is encrypted; upload a zip without a password"
            )
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            raise ArchiveRejected(
                "archive",
                f"entry {name!r} uses unsupported compression method {info.compress_type}",
            )
        if info.file_size > limits.max_file_bytes:
            raise ArchiveRejected(
                "archive",
                f"entry {name!r} is {info.file_size} bytes, more than the per-file limit of "
                f"{limits.max_file_bytes}",
            )
        if info.file_size > limits.ratio_check_min_bytes and (
            info.compress_size <= 0
            or info.file_size / info.compress_size > limits.max_compression_ratio
        ):
            raise ArchiveRejected(
                "archive",
                f"entry {name!r} has a suspicious compression ratio "
                f"({info.file_size} bytes from {info.compress_size}); possible zip bomb",
            )
        total += info.file_size
        if not _is_dir(info):
            key = _entry_key(name)
            if key in seen:
                # Two entries with one name make "which bytes did we check" ambiguous.
                raise ArchiveRejected("archive", f"entry {name!r} appears more than once")
            seen.add(key)
    if total > limits.max_uncompressed_bytes:
        raise ArchiveRejected(
            "archive",
            f"the archive expands to {total} bytes, more than {limits.max_uncompressed_bytes}",
        )


def _check_entry_name(name: str) -> None:
    # Nothing is ever extracted, but a name like this only comes from a crafted or
    # broken archive, and the caller might derive storage paths from entry names.
    if not name:
        raise ArchiveRejected("archive", "the archive has an entry with an empty name")
    if name.startswith(("/", "\\")):
        raise ArchiveRejected("archive", f"entry {name!r} has an absolute path")
    if _DRIVE_LETTER.match(name):
        raise ArchiveRejected("archive", f"entry {name!r} has a drive letter")
    for part in name.replace("\\", "/").split("/"):
        # Windows drops trailing dots and spaces, so ".. " and "..." traverse there too.
        if part not in ("", ".") and not part.rstrip(". "):
            raise ArchiveRejected("archive", f"entry {name!r} contains a '..' path component")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[bytes, str]:
    """Read one entry fully, never producing more than its declared size.

    Returns ``(data, sha256)``. Raises :class:`ArchiveRejected` if the entry inflates
    past its declared size and :class:`_EntryUnreadable` if the data is damaged.
    """
    declared = info.file_size
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    received = 0
    try:
        with zf.open(info) as handle:
            while True:
                # Ask for one byte more than remains so an overrun is detectable.
                chunk = handle.read(min(_READ_CHUNK, declared - received + 1))
                if not chunk:
                    break
                received += len(chunk)
                if received > declared:
                    raise ArchiveRejected(
                        "archive",
                        f"entry {info.filename!r} inflates beyond its declared size of "
                        f"{declared} bytes; possible zip bomb",
                    )
                digest.update(chunk)
                chunks.append(chunk)
    except (ArchiveRejected, MemoryError):
        raise
    except Exception as exc:
        # CRC mismatches (BadZipFile), zlib/bz2/lzma stream errors and short streams all
        # mean "these bytes are not what was stored"; the decoders use many exception types.
        raise _EntryUnreadable(f"the zip entry is damaged ({exc})") from exc
    if received != declared:
        raise _EntryUnreadable(f"the zip entry holds {received} bytes, not {declared}")
    return b"".join(chunks), digest.hexdigest()


class _ManifestStream(io.RawIOBase):
    """A read-only view of a manifest's bytes that never yields more than ``limit`` of them.

    Raises ``too_large`` once the source holds more. For a zip entry (``declared`` given,
    equal to ``limit``) a short or damaged stream is refused as unreadable. Closing this
    view leaves the source open: the caller owns it.
    """

    def __init__(
        self,
        source: IO[bytes],
        *,
        name: str,
        limit: int,
        too_large: ArchiveRejected,
        declared: int | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._name = name
        self._limit = limit
        self._too_large = too_large
        self._declared = declared
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Ask for one byte more than may remain so an overrun is detectable.
        wanted = min(len(buffer), self._limit - self._received + 1)
        try:
            data = self._source.read(wanted)
        except (ArchiveRejected, MemoryError):
            raise
        except Exception as exc:
            # CRC mismatches and decompressor errors of a damaged zip entry.
            raise ArchiveRejected(
                "manifest", f"{self._name} cannot be read: the zip entry is damaged ({exc})"
            ) from exc
        self._received += len(data)
        if self._received > self._limit:
            raise self._too_large
        if not data and self._declared is not None and self._received != self._declared:
            raise ArchiveRejected(
                "manifest",
                f"{self._name} cannot be read: the zip entry holds {self._received} bytes, "
                f"not {self._declared}",
            )
        buffer[: len(data)] = data
        return len(data)


def _read_manifest_entry_rows(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, manifest_format: str, limits: ArchiveLimits
) -> list[_ManifestRow]:
    """The rows of a manifest inside the zip, streamed from the entry (see _collect_rows)."""
    name = repr(info.filename)
    try:
        source = zf.open(info)
    except Exception as exc:
        raise ArchiveRejected(
            "manifest", f"{name} cannot be read: the zip entry is damaged ({exc})"
        ) from exc
    with source:
        stream = _ManifestStream(
            source,
            name=name,
            limit=info.file_size,
            declared=info.file_size,
            too_large=ArchiveRejected(
                "archive",
                f"entry {info.filename!r} inflates beyond its declared size of "
                f"{info.file_size} bytes; possible zip bomb",
            ),
        )
        return _collect_rows(io.BufferedReader(stream, _READ_CHUNK), manifest_format, limits)


def _read_manifest_rows(
    manifest: ManifestSource, manifest_format: str | None, limits: ArchiveLimits
) -> list[_ManifestRow]:
    """The rows of a manifest uploaded beside the zip, streamed (see _collect_rows)."""
    too_large = ArchiveRejected(
        "manifest", f"manifest is larger than {limits.max_manifest_bytes} bytes"
    )
    if isinstance(manifest, bytes):
        source: IO[bytes] = io.BytesIO(manifest)
    elif isinstance(manifest, str | os.PathLike):
        source = open(manifest, "rb")  # noqa: SIM115 (closed below)
    else:
        source = manifest
    try:
        stream = io.BufferedReader(
            _ManifestStream(
                source, name="the manifest", limit=limits.max_manifest_bytes, too_large=too_large
            ),
            _READ_CHUNK,
        )
        if manifest_format is None:
            manifest_format = _sniff_manifest_format(stream.peek(64))
        return _collect_rows(stream, manifest_format, limits)
    finally:
        if source is not manifest:
            source.close()


def _collect_rows(
    stream: io.BufferedReader, manifest_format: str, limits: ArchiveLimits
) -> list[_ManifestRow]:
    """Parse rows as they are read and stop at row ``max_files + 1``: a manifest of millions
    of rows costs the rows up to the limit, never its whole text or its whole parse."""
    parse = _iter_csv if manifest_format == "csv" else _iter_json
    rows: list[_ManifestRow] = []
    for row in parse(stream):
        rows.append(row)
        if len(rows) > limits.max_files:
            raise ArchiveRejected("manifest", f"manifest has more than {limits.max_files} rows")
    if not rows:
        raise ArchiveRejected("manifest", "the manifest has no rows")
    return rows


def _reread(
    zf: zipfile.ZipFile, path: str, expected_sha256: str | None, limits: ArchiveLimits
) -> bytes:
    _check_entry_name(path)
    try:
        info = zf.getinfo(path)
    except KeyError:
        raise FileNotFoundError(f"{path!r} is not in the archive") from None
    # Re-check the per-entry bounds: the archive may not be the one that was scanned.
    _check_structure([info], limits)
    try:
        data, digest = _read_entry(zf, info)
    except _EntryUnreadable as exc:
        raise ArchiveRejected("archive", f"entry {path!r} cannot be read: {exc}") from exc
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ArchiveRejected("archive", f"entry {path!r} changed since it was scanned")
    return data


# ---------------------------------------------------------------------- path helpers


def _nfc(text: str) -> str:
    # macOS zips often store names decomposed (NFD); compare names in composed form so
    # "café" typed by the user matches a folder zipped on a Mac.
    return unicodedata.normalize("NFC", text)


def _parts(name: str) -> list[str]:
    # Some Windows tools write backslash separators; treat them as separators.
    return [p for p in _nfc(name).replace("\\", "/").split("/") if p not in ("", ".")]


def _entry_key(name: str) -> str:
    return "/".join(_parts(name))


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.filename.replace("\\", "/").endswith("/")


def _is_junk(key: str) -> bool:
    parts = key.split("/")
    return (
        any(p.startswith(".") or p == _MACOS_METADATA_DIR for p in parts)
        or parts[-1].lower() in _IGNORED_BASENAMES
    )


def _common_top(keys: Iterable[str]) -> str | None:
    """The single top-level folder every key lives under, if there is one."""
    top: str | None = None
    for key in keys:
        first, sep, _ = key.partition("/")
        if not sep or (top is not None and first != top):
            return None
        top = first
    return top


def _find_manifest(candidates: list[str]) -> str | None:
    found = [k for k in candidates if "/" not in k and k.lower() in _MANIFEST_NAMES]
    if not found:
        # Zipping a folder puts everything under that folder's name.
        top = _common_top(candidates)
        if top is not None:
            found = [
                k
                for k in candidates
                if k.count("/") == 1
                and k.startswith(top + "/")
                and k.split("/")[1].lower() in _MANIFEST_NAMES
            ]
    if len(found) > 1:
        raise ArchiveRejected(
            "manifest", f"the archive has more than one manifest: {', '.join(found)}"
        )
    return found[0] if found else None


def _split_folder_names(allowed: frozenset[str]) -> frozenset[str]:
    return SPLIT_FOLDER_NAMES | allowed


def _canonical_split(raw: str, allowed: frozenset[str]) -> str | None:
    split = raw.strip().lower()
    if split in allowed:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias is not None and alias in allowed:
        return alias
    return None


def _resolve_label(
    raw: str, split: str, label_lookup: Mapping[str, str], *, where: str
) -> tuple[str, tuple[str, str] | None]:
    """Map a raw label onto the dataset's label, or explain why it cannot be used."""
    if not raw:
        if split == DEPLOYMENT_SPLIT:
            return "", None
        return "", (
            MISSING_LABEL,
            f"{where} has no label; only '{DEPLOYMENT_SPLIT}' images may be unlabelled",
        )
    label = label_lookup.get(_nfc(raw))
    if label is None:
        return "", (
            UNKNOWN_LABEL,
            f"{where} has label {raw!r}, which is not a label of this dataset",
        )
    return label, None


# -------------------------------------------------------------------- ImageFolder layout


def _imagefolder_items(
    candidates: list[str],
    files: Mapping[str, zipfile.ZipInfo],
    default_split: str,
    allowed: frozenset[str],
    label_lookup: Mapping[str, str],
) -> list[_Item]:
    split_names = _split_folder_names(allowed)
    split_parts = [k.split("/") for k in candidates]
    strip_top = _should_strip_top(split_parts, split_names)
    items = []
    for key, parts in zip(candidates, split_parts, strict=True):
        info = files[key]
        item = _Item(key=key, path=info.filename, info=info)
        rel = parts[1:] if strip_top else parts
        where = repr(info.filename)
        split_folder: str | None = None
        label_folder = ""
        if len(rel) == 3:
            split_folder, label_folder = rel[0], rel[1]
        elif len(rel) == 2:
            if rel[0].lower() in split_names and _nfc(rel[0]) not in label_lookup:
                # "deployment/x.png": a split folder holding unlabelled samples.
                split_folder = rel[0]
            else:
                label_folder = rel[0]
        else:
            expected = "[split/]<class>/<file>"
            item.error = (
                MISSING_LABEL,
                f"{where} is not at <class>/<file> or {expected}; cannot tell its label",
            )
            items.append(item)
            continue
        split = default_split
        if split_folder is not None:
            canonical = _canonical_split(split_folder, allowed)
            if canonical is None:
                item.error = (
                    BAD_SPLIT,
                    f"{where} is in folder {split_folder!r}, which is not an allowed split "
                    f"({', '.join(sorted(allowed))})",
                )
                items.append(item)
                continue
            split = canonical
        item.split = split
        item.label, item.error = _resolve_label(label_folder, split, label_lookup, where=where)
        items.append(item)
    return items


def _should_strip_top(split_parts: list[list[str]], split_names: frozenset[str]) -> bool:
    """Whether every path starts with one wrapper folder that is not part of the layout."""
    if not split_parts or any(len(parts) < 3 for parts in split_parts):
        return False
    first = {parts[0] for parts in split_parts}
    if len(first) != 1:
        return False
    # "train/cat/x.png" alone looks like a wrapper folder; it is a split folder unless
    # everything sits one level deeper ("test/train/cat/x.png").
    top = next(iter(first))
    return top.lower() not in split_names or all(len(parts) >= 4 for parts in split_parts)


# ----------------------------------------------------------------------- manifest layout


def _sniff_manifest_format(data: bytes) -> str:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if head in (b"[", b"{") else "csv"


def _reject_constant(name: str) -> NoReturn:
    # NaN/Infinity are not JSON and PostgreSQL's jsonb refuses them.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e999 parses as inf, which jsonb refuses as it refuses Infinity.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _load_json(text: str) -> object:
    return _JSON_DECODER.decode(text)


# Text the database cannot store: PostgreSQL refuses NUL in text and jsonb, and an unpaired
# surrogate (a JSON escape such as "\ud800") cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(value: object) -> str | None:
    """What in ``value`` (a string, or JSON searched through its lists and dicts, keys too)
    the database cannot store, described for a message; None when it is all storable."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            found = _UNSTORABLE.search(current)
            if found is not None:
                char = found.group()
                if char == "\x00":
                    return "a NUL character"
                return f"an unpaired surrogate (\\u{ord(char):04x})"
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return None


def _refuse_unstorable(value: object, where: str) -> None:
    problem = _unstorable(value)
    if problem is not None:
        raise ArchiveRejected(
            "manifest",
            f"manifest {where} contains {problem}, which cannot be stored; remove it and "
            "upload again",
        )


def _iter_csv(stream: IO[bytes]) -> Iterator[_ManifestRow]:
    """The rows of a CSV manifest, read line by line."""
    # Excel prepends a BOM; newline="" lets the csv module see quoted line breaks.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = None
    try:
        first_line = text.readline()
        if not first_line:
            raise ArchiveRejected("manifest", "the CSV manifest is empty")
        # Spreadsheets in many locales save with ';' or tabs; the header line tells which.
        delimiter = max((",", ";", "\t"), key=first_line.split("\n", 1)[0].count)
        reader = csv.reader(itertools.chain([first_line], text), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ArchiveRejected("manifest", "the CSV manifest is empty")
        _refuse_unstorable(header, "line 1")
        names = [h.strip() for h in header]
        lowered = [n.lower() for n in names]
        duplicates = sorted({n for n in lowered if n and lowered.count(n) > 1})
        if duplicates:
            raise ArchiveRejected(
                "manifest", f"the manifest repeats column(s): {', '.join(duplicates)}"
            )
        for required in ("path", "label"):
            if required not in lowered:
                raise ArchiveRejected(
                    "manifest", f"the manifest is missing the required column {required!r}"
                )
        special = {
            name: lowered.index(name)
            for name in ("path", "label", "split", "metadata")
            if name in lowered
        }
        extra = [(i, n) for i, n in enumerate(names) if n and i not in special.values()]
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            where = f"line {reader.line_num}"
            _refuse_unstorable(cells, where)
            row = _csv_row(cells, names, special, extra, where)
            _refuse_unstorable(row.metadata, where)  # the metadata column's JSON escapes
            yield row
    except csv.Error as exc:
        raise ArchiveRejected(
            "manifest",
            f"the CSV manifest is malformed near line {reader.line_num if reader else 1} ({exc})",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ArchiveRejected("manifest", f"the CSV manifest is not UTF-8 ({exc})") from exc
    finally:
        text.detach()  # the caller closes the stream


def _csv_row(
    cells: list[str],
    names: list[str],
    special: Mapping[str, int],
    extra: list[tuple[int, str]],
    where: str,
) -> _ManifestRow:
    def cell(column: str) -> str:
        index = special.get(column)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    # Empty cells mean "no value" in a spreadsheet, so they are left out of metadata.
    metadata: dict[str, Any] = {
        name: cells[i].strip() for i, name in extra if i < len(cells) and cells[i].strip()
    }
    row = _ManifestRow(where, cell("path"), cell("label"), cell("split"), metadata)
    if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
        row.metadata_error = f"{where} has more cells than the header has columns"
        return row
    raw = cell("metadata")
    if raw:
        try:
            parsed = _load_json(raw)
        except (ValueError, RecursionError) as exc:
            row.metadata_error = f"the metadata column is not valid JSON ({exc})"
            return row
        if not isinstance(parsed, dict):
            row.metadata_error = "the metadata column must hold a JSON object"
            return row
        # Explicit JSON metadata is the more deliberate source, so it wins on conflicts.
        metadata.update(parsed)
    return row


# One JSON manifest item is decoded at a time; an item (one image's row) longer than this is
# refused rather than buffered without bound.
MAX_JSON_ITEM_CHARS = 1024 * 1024
_JSON_CHUNK_CHARS = 64 * 1024
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _iter_json(stream: IO[bytes]) -> Iterator[_ManifestRow]:
    """The rows of a JSON manifest (a list of objects), decoded one item at a time."""
    for number, obj in iter_json_list(stream):
        yield _json_row(obj, number)


def iter_json_list(
    stream: IO[bytes], *, field: str = "manifest", what: str = "the manifest"
) -> Iterator[tuple[int, object]]:
    """``(item number, item)`` for each item of a JSON list read from ``stream`` (UTF-8).

    A bounded buffer holds the text of the item being decoded, so neither the document nor
    its whole parse is ever in memory; an item longer than ``MAX_JSON_ITEM_CHARS`` is
    refused. NaN, Infinity and numbers out of range are refused as PostgreSQL's jsonb
    refuses them. Raises :class:`ArchiveRejected` naming ``field``, its message naming the
    document as ``what``. The stream is left open.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig")
    buffer = ""
    pos = 0
    at_end = False

    def refuse(detail: str) -> NoReturn:
        raise ArchiveRejected(field, f"{what} is not valid JSON ({detail})")

    def read_more() -> bool:
        nonlocal buffer, pos, at_end
        chunk = text.read(_JSON_CHUNK_CHARS)
        if not chunk:
            at_end = True
            return False
        buffer = buffer[pos:] + chunk
        pos = 0
        return True

    def next_char() -> str:
        """The next character that is not white space, without consuming it; '' at the end."""
        nonlocal pos
        while True:
            match = _JSON_SPACE.match(buffer, pos)
            assert match is not None
            pos = match.end()
            if pos < len(buffer):
                return buffer[pos]
            if at_end or not read_more():
                return ""

    try:
        first = next_char()
        if first != "[":
            if first and first in '{"-0123456789tfn':
                raise ArchiveRejected(field, f"{what} must be a JSON list of objects")
            refuse("it does not start with '['")
        pos += 1
        if next_char() == "]":
            pos += 1
        else:
            number = 0
            while True:
                number += 1
                next_char()
                while True:
                    try:
                        obj, end = _JSON_DECODER.raw_decode(buffer, pos)
                    except json.JSONDecodeError as exc:
                        # Either the item is cut off at the end of the buffer, or it is bad.
                        if at_end:
                            refuse(f"item {number}: {exc.msg}")
                        if len(buffer) - pos > MAX_JSON_ITEM_CHARS:
                            raise ArchiveRejected(
                                field,
                                f"item {number} of {what} is longer than "
                                f"{MAX_JSON_ITEM_CHARS} characters",
                            ) from exc
                        read_more()
                        continue
                    if end == len(buffer) and not at_end and not isinstance(obj, dict | list | str):
                        # A number or literal may go on in the next chunk ("12" + "3").
                        read_more()
                        continue
                    break
                pos = end
                yield number, obj
                separator = next_char()
                pos += 1
                if separator == "]":
                    break
                if separator != ",":
                    refuse(f"expected ',' or ']' after item {number}")
        if next_char():
            refuse("extra data after the closing ']'")
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError, NaN/Infinity, numbers out of range, nesting too deep.
        if isinstance(exc, ArchiveRejected):
            raise
        if isinstance(exc, UnicodeDecodeError):
            raise ArchiveRejected(field, f"{what} is not UTF-8 ({exc})") from exc
        refuse(str(exc) or type(exc).__name__)
    finally:
        text.detach()  # the caller closes the stream


def _json_row(obj: object, number: int) -> _ManifestRow:
    where = f"item {number}"
    if not isinstance(obj, dict):
        raise ArchiveRejected("manifest", f"manifest {where} is not a JSON object")
    for required in ("path", "label"):
        if required not in obj:
            raise ArchiveRejected(
                "manifest", f"manifest {where} is missing the required field {required!r}"
            )
    _refuse_unstorable(obj, where)
    path = obj["path"] if isinstance(obj["path"], str) else ""
    # Unknown keys are treated like extra CSV columns: metadata.
    metadata = {k: v for k, v in obj.items() if k not in ("path", "label", "split", "metadata")}
    row = _ManifestRow(where, path.strip(), obj["label"], obj.get("split"), metadata)
    given = obj.get("metadata")
    if isinstance(given, dict):
        metadata.update(given)
    elif given is not None:
        row.metadata_error = "metadata must be a JSON object"
    return row


def _manifest_items(
    rows: list[_ManifestRow],
    files: Mapping[str, zipfile.ZipInfo],
    base: str | None,
    default_split: str,
    allowed: frozenset[str],
    label_lookup: Mapping[str, str],
) -> list[_Item]:
    first_listed: dict[str, str] = {}
    items = []
    for row in rows:
        key = _entry_key(row.path)
        info = files.get(key)
        if info is None and base is not None and key:
            # Paths may be relative to the manifest's folder (or the zip's wrapper folder).
            prefixed = f"{_nfc(base)}/{key}"
            if prefixed in files:
                key, info = prefixed, files[prefixed]
        item = _Item(key=key, path=info.filename if info else row.path, info=info)
        items.append(item)
        where = f"{row.path!r} (manifest {row.where})"
        if not row.path:
            item.error = (MISSING_FILE, f"manifest {row.where} has no path")
            continue
        if info is None:
            item.error = (MISSING_FILE, f"{where} is not in the archive")
            continue
        if key in first_listed:
            item.error = (
                DUPLICATE_IMAGE,
                f"{where} is listed more than once; first at {first_listed[key]}",
            )
            continue
        first_listed[key] = row.where
        if row.metadata_error is not None:
            item.error = (BAD_METADATA, f"{where}: {row.metadata_error}")
            continue
        item.metadata = row.metadata
        raw_split = row.split if row.split is not None else ""
        split = (
            _canonical_split(raw_split or default_split, allowed)
            if isinstance(raw_split, str)
            else None
        )
        if split is None:
            item.error = (
                BAD_SPLIT,
                f"{where} has split {raw_split!r}, which is not an allowed split "
                f"({', '.join(sorted(allowed))})",
            )
            continue
        item.split = split
        raw_label = row.label
        if raw_label is None:
            raw_label = ""
        elif isinstance(raw_label, int) and not isinstance(raw_label, bool):
            raw_label = str(raw_label)  # numeric class ids written as JSON numbers
        if not isinstance(raw_label, str):
            item.error = (UNKNOWN_LABEL, f"{where} has a label that is not a string")
            continue
        item.label, item.error = _resolve_label(raw_label.strip(), split, label_lookup, where=where)
    # Stable sort keeps the first listing of a repeated path ahead of its repeats.
    items.sort(key=lambda item: item.key)
    return items


# ----------------------------------------------------------------------- image checks


def _examine(
    zf: zipfile.ZipFile,
    items: list[_Item],
    known: frozenset[str],
    limits: ArchiveLimits,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[AcceptedImage], list[FileError]]:
    accepted: list[AcceptedImage] = []
    errors: list[FileError] = []
    first_path: dict[str, str] = {}
    total = len(items)
    if progress is not None:
        progress(0, total)
    for done, item in enumerate(items, start=1):
        outcome = _examine_item(zf, item, known, first_path, limits)
        if isinstance(outcome, FileError):
            errors.append(outcome)
        else:
            accepted.append(outcome)
            first_path[outcome.sha256] = outcome.path
        if progress is not None:
            progress(done, total)
    return accepted, errors


def _examine_item(
    zf: zipfile.ZipFile,
    item: _Item,
    known: frozenset[str],
    first_path: Mapping[str, str],
    limits: ArchiveLimits,
) -> AcceptedImage | FileError:
    # Cheap checks ran already; an item failing them is never decompressed.
    if item.error is not None:
        return FileError(item.path, *item.error)
    assert item.info is not None
    try:
        data, digest = _read_entry(zf, item.info)
    except _EntryUnreadable as exc:
        return FileError(item.path, CORRUPT_IMAGE, f"{item.path!r}: {exc}")
    decoded = _decode_image(data, item.path, limits)
    if isinstance(decoded, FileError):
        return decoded
    # Duplicates are judged after decoding so a broken copy is reported as broken.
    if digest in known:
        return FileError(item.path, DUPLICATE_IMAGE, f"{item.path!r} is already in the dataset")
    if digest in first_path:
        return FileError(
            item.path,
            DUPLICATE_IMAGE,
            f"{item.path!r} is identical to {first_path[digest]!r} in this archive",
        )
    width, height, fmt = decoded
    return AcceptedImage(
        path=item.path,
        label=item.label,
        split=item.split,
        metadata=item.metadata,
        sha256=digest,
        width=width,
        height=height,
        format=fmt,
        size_bytes=len(data),
    )


def _decode_image(
    data: bytes, path: str, limits: ArchiveLimits
) -> tuple[int, int, str] | FileError:
    """Fully decode the first frame; returns ``(width, height, format)`` or the error."""
    supported = ", ".join(SUPPORTED_FORMATS)
    try:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it fatal.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
                width, height = image.size
                fmt = image.format or ""
                # The header is parsed but no pixels are decoded yet: refuse here, before
                # load() would allocate width*height pixels.
                if width * height > limits.max_image_pixels:
                    return FileError(
                        path,
                        DECOMPRESSION_BOMB,
                        f"{path!r} is {width}x{height} pixels, more than the limit of "
                        f"{limits.max_image_pixels}",
                    )
                if width <= 0 or height <= 0:
                    return FileError(path, CORRUPT_IMAGE, f"{path!r} has no pixels")
                image.verify()
            # verify() leaves the image unusable and does not decode pixel data, so a
            # fresh open + load() is what catches truncated files.
            with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return FileError(path, DECOMPRESSION_BOMB, f"{path!r} is too large to decode ({exc})")
    except UnidentifiedImageError:
        if _looks_like_image(data):
            return FileError(path, CORRUPT_IMAGE, f"{path!r} is a damaged image file")
        return FileError(path, NOT_IMAGE, f"{path!r} is not a supported image ({supported})")
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise many exception types on hostile input
        return FileError(path, CORRUPT_IMAGE, f"{path!r} is damaged or truncated ({exc})")
    # Pillow reports multi-picture JPEGs (common from cameras) as MPO; they are JPEGs.
    return width, height, "JPEG" if fmt == "MPO" else fmt


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(_IMAGE_SIGNATURES):
        return True
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
