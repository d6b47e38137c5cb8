"""Tests for annotations.archive: zip upload inspection, without Django or a database."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest
from PIL import Image

from annotations.archive import (
    AcceptedImage,
    ArchiveLimits,
    ArchiveRejected,
    FileError,
    ScanResult,
    iter_image_bytes,
    read_image_bytes,
    scan_archive,
)

LABELS = ("cat", "dog")

Entry = tuple[str | zipfile.ZipInfo, bytes]


# ----------------------------------------------------------------------------- helpers


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (8, 6)) -> bytes:
    """A small image whose pixels (and hence sha256) depend on ``seed``."""
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 100))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noisy_png(size: tuple[int, int] = (64, 64)) -> bytes:
    # Noise does not compress, so truncating the file really cuts into pixel data.
    pixels = hashlib.shake_256(b"noise").digest(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def make_zip(path: Path, entries: Iterable[Entry], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def scan(path: Path, **kwargs: object) -> ScanResult:
    kwargs.setdefault("labels", LABELS)
    return scan_archive(path, **kwargs)  # type: ignore[arg-type]


def codes(result: ScanResult) -> dict[str, str]:
    return {error.path: error.code for error in result.errors}


def only_error(result: ScanResult) -> FileError:
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def rejected(path: Path, **kwargs: object) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as info:
        scan(path, **kwargs)
    return info.value


# ------------------------------------------------------------------ ImageFolder layout


def test_imagefolder_without_split_folders(tmp_path: Path) -> None:
    cat, dog = image_bytes(1), image_bytes(2)
    zip_path = make_zip(tmp_path / "u.zip", [("dog/b.png", dog), ("cat/a.png", cat)])

    result = scan(zip_path)

    assert result.layout == "imagefolder"
    assert result.errors == []
    assert [a.path for a in result.accepted] == ["cat/a.png", "dog/b.png"]  # sorted
    first = result.accepted[0]
    assert first == AcceptedImage(
        path="cat/a.png",
        label="cat",
        split="train",
        metadata={},
        sha256=hashlib.sha256(cat).hexdigest(),
        width=8,
        height=6,
        format="PNG",
        size_bytes=len(cat),
    )
    assert result.accepted[1].label == "dog"


def test_imagefolder_default_split_comes_from_caller(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", image_bytes(1))])

    result = scan(zip_path, default_split="test")

    assert [a.split for a in result.accepted] == ["test"]


def test_imagefolder_with_split_folders(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("train/cat/a.png", image_bytes(1)),
            ("test/dog/b.png", image_bytes(2)),
            ("deployment/cat/c.png", image_bytes(3)),
            # Deployment samples may come without a class folder: they are unlabelled.
            ("deployment/d.png", image_bytes(4)),
        ],
    )

    result = scan(zip_path)

    assert result.errors == []
    got = {a.path: (a.split, a.label) for a in result.accepted}
    assert got == {
        "train/cat/a.png": ("train", "cat"),
        "test/dog/b.png": ("test", "dog"),
        "deployment/cat/c.png": ("deployment", "cat"),
        "deployment/d.png": ("deployment", ""),
    }


def test_imagefolder_single_split_folder_is_not_mistaken_for_a_wrapper(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("test/cat/a.png", image_bytes(1)), ("test/dog/b.png", image_bytes(2))]
    )

    result = scan(zip_path)

    assert {(a.split, a.label) for a in result.accepted} == {("test", "cat"), ("test", "dog")}


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["mydata/cat/a.png", "mydata/dog/b.png"], {("train", "cat"), ("train", "dog")}),
        (
            ["mydata/train/cat/a.png", "mydata/test/dog/b.png"],
            {("train", "cat"), ("test", "dog")},
        ),
        # A wrapper folder that happens to be called like a split.
        (["test/train/cat/a.png", "test/train/dog/b.png"], {("train", "cat"), ("train", "dog")}),
    ],
)
def test_imagefolder_with_top_folder(
    tmp_path: Path, names: list[str], expected: set[tuple[str, str]]
) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [(n, image_bytes(i)) for i, n in enumerate(names)])

    result = scan(zip_path)

    assert result.errors == []
    assert {(a.split, a.label) for a in result.accepted} == expected


def test_validation_folder_maps_to_allowed_val_split(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("validation/cat/a.png", image_bytes(1))])

    result = scan(zip_path, allowed_splits=("train", "val"))

    assert [a.split for a in result.accepted] == ["val"]


def test_junk_entries_are_skipped_silently(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as zf:
        zf.mkdir("cat") if hasattr(zf, "mkdir") else zf.writestr("cat/", b"")
        zf.writestr("cat/a.png", image_bytes(1))
        zf.writestr("cat/.DS_Store", b"\x00\x00\x00\x01Bud1")
        zf.writestr("__MACOSX/cat/._a.png", b"\x00\x05\x16\x07")
        zf.writestr("dog/Thumbs.db", b"junk")
        zf.writestr(".git/config", b"[core]")

    result = scan(tmp_path / "u.zip")

    assert [a.path for a in result.accepted] == ["cat/a.png"]
    assert result.errors == []
    assert result.ignored == []


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "JPEG"), ("WEBP", "WEBP"), ("BMP", "BMP"), ("GIF", "GIF"), ("TIFF", "TIFF")],
)
def test_supported_formats(tmp_path: Path, fmt: str, expected: str) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.img", image_bytes(1, fmt=fmt))])

    result = scan(zip_path)

    assert [a.format for a in result.accepted] == [expected]


def test_animated_gif_is_accepted_using_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("P", (5, 4), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    zip_path = make_zip(tmp_path / "u.zip", [("cat/anim.gif", buffer.getvalue())])

    result = scan(zip_path)

    assert [(a.format, a.width, a.height) for a in result.accepted] == [("GIF", 5, 4)]


def test_stored_and_bzip2_entries_are_read(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as zf:
        zf.writestr("cat/a.png", image_bytes(1), compress_type=zipfile.ZIP_STORED)
        zf.writestr("dog/b.png", image_bytes(2), compress_type=zipfile.ZIP_BZIP2)

    result = scan(tmp_path / "u.zip")

    assert len(result.accepted) == 2


def test_progress_is_reported_per_file(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [("cat/a.png", image_bytes(1)), ("cat/b.png", b"nope"), ("dog/c.png", image_bytes(3))],
    )
    calls: list[tuple[int, int]] = []

    scan(zip_path, progress=lambda done, total: calls.append((done, total)))

    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_report_is_json_ready(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("cat/a.png", image_bytes(1)),
            ("cat/b.png", b"not an image"),
            ("cow/c.png", image_bytes(3)),
        ],
    )

    report = scan(zip_path).report()

    assert json.loads(json.dumps(report)) == report
    assert report["layout"] == "imagefolder"
    assert report["accepted"] == 1
    assert report["rejected"] == 2
    assert report["error_counts"] == {"not_image": 1, "unknown_label": 1}
    assert report["accepted_by_label"] == {"cat": 1}
    assert report["accepted_by_split"] == {"train": 1}
    assert [e["path"] for e in report["errors"]] == ["cat/b.png", "cow/c.png"]
    assert report["errors_truncated"] is False
    assert scan(zip_path).report(max_errors=1)["errors_truncated"] is True


# --------------------------------------------------------------------- manifest layout


def test_csv_manifest_with_metadata_columns(tmp_path: Path) -> None:
    manifest = (
        "path,label,split,site,metadata\n"
        'imgs/a.png,cat,train,north,"{""depth_m"": 12.5, ""tags"": [""a""]}"\n'
        "imgs/b.png,dog,test,south,\n"
        "imgs/c.png,,deployment,,\n"
        "imgs/d.png,cat,,east,\n"
    )
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("manifest.csv", manifest.encode()),
            ("imgs/a.png", image_bytes(1)),
            ("imgs/b.png", image_bytes(2)),
            ("imgs/c.png", image_bytes(3)),
            ("imgs/d.png", image_bytes(4)),
            ("imgs/unlisted.png", image_bytes(5)),
        ],
    )

    result = scan(zip_path)

    assert result.layout == "manifest"
    assert result.errors == []
    got = {a.path: (a.label, a.split, a.metadata) for a in result.accepted}
    assert got == {
        "imgs/a.png": ("cat", "train", {"site": "north", "depth_m": 12.5, "tags": ["a"]}),
        "imgs/b.png": ("dog", "test", {"site": "south"}),
        "imgs/c.png": ("", "deployment", {}),
        "imgs/d.png": ("cat", "train", {"site": "east"}),
    }
    assert result.ignored == ["imgs/unlisted.png"]


def test_csv_manifest_excel_style_bom_and_semicolons(tmp_path: Path) -> None:
    manifest = "\ufeffPath;Label;Plate\r\na.png;cat;P1\r\n".encode()
    zip_path = make_zip(tmp_path / "u.zip", [("manifest.csv", manifest), ("a.png", image_bytes(1))])

    result = scan(zip_path)

    assert [(a.label, a.metadata) for a in result.accepted] == [("cat", {"Plate": "P1"})]


def test_json_manifest(tmp_path: Path) -> None:
    manifest = [
        {"path": "b.png", "label": "dog", "split": "test", "metadata": {"plate": 3}},
        {"path": "a.png", "label": "cat"},
        {"path": "c.png", "label": None, "split": "deployment", "camera": "c1"},
    ]
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("manifest.json", json.dumps(manifest).encode()),
            ("a.png", image_bytes(1)),
            ("b.png", image_bytes(2)),
            ("c.png", image_bytes(3)),
        ],
    )

    result = scan(zip_path)

    assert result.layout == "manifest"
    assert result.errors == []
    assert [(a.path, a.label, a.split, a.metadata) for a in result.accepted] == [
        ("a.png", "cat", "train", {}),
        ("b.png", "dog", "test", {"plate": 3}),
        ("c.png", "", "deployment", {"camera": "c1"}),
    ]


def test_manifest_inside_top_folder_with_relative_paths(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("export/manifest.csv", b"path,label\nimgs/a.png,cat\n"),
            ("export/imgs/a.png", image_bytes(1)),
        ],
    )

    result = scan(zip_path)

    assert [(a.path, a.label) for a in result.accepted] == [("export/imgs/a.png", "cat")]


@pytest.mark.parametrize("fmt", ["csv", "json", None])
def test_separate_manifest_bytes(tmp_path: Path, fmt: str | None) -> None:
    rows = [{"path": "x/a.png", "label": "cat"}, {"path": "x/b.png", "label": "dog"}]
    if fmt == "json":
        manifest = json.dumps(rows).encode()
    else:
        manifest = b"path,label\nx/a.png,cat\nx/b.png,dog\n"
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("x/a.png", image_bytes(1)),
            ("x/b.png", image_bytes(2)),
            # Inside-zip manifests are ignored when one is supplied separately.
            ("manifest.csv", b"path,label\nx/a.png,dog\n"),
        ],
    )

    result = scan(zip_path, manifest=manifest, manifest_format=fmt and fmt.upper())

    assert result.layout == "manifest"
    assert result.errors == []
    assert [(a.path, a.label) for a in result.accepted] == [("x/a.png", "cat"), ("x/b.png", "dog")]


def test_separate_manifest_sniffs_json(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("a.png", image_bytes(1))])

    result = scan(zip_path, manifest=b' [{"path": "a.png", "label": "cat"}]')

    assert [a.label for a in result.accepted] == ["cat"]


def test_unsupported_manifest_format_is_rejected(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("a.png", image_bytes(1))])

    error = rejected(zip_path, manifest=b"path,label\n", manifest_format="xlsx")

    assert error.field == "manifest_format"


# ------------------------------------------------------------ whole-archive rejections


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "u.zip"
    path.write_bytes(b"this is not a zip archive at all")

    error = rejected(path)

    assert error.field == "archive"
    assert "zip" in error.message


def test_truncated_zip(tmp_path: Path) -> None:
    data = make_zip(tmp_path / "good.zip", [("cat/a.png", image_bytes(1))]).read_bytes()
    path = tmp_path / "u.zip"
    path.write_bytes(data[: len(data) // 2])

    assert rejected(path).field == "archive"


@pytest.mark.parametrize(
    "name",
    [
        "../evil.png",
        "cat/../../evil.png",
        "/etc/x.png",
        "C:/Windows/x.png",
        "..\\evil.png",
        "\\\\server\\share\\x.png",
    ],
)
def test_unsafe_entry_names_reject_the_archive(tmp_path: Path, name: str) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/ok.png", image_bytes(1)), (name, image_bytes(2))]
    )

    error = rejected(zip_path)

    assert error.field == "archive"
    assert repr(name) in error.message


def test_symlink_entry_rejects_the_archive(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("cat/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/ok.png", image_bytes(1)), (link, b"/etc/passwd")]
    )

    error = rejected(zip_path)

    assert error.field == "archive"
    assert "cat/link.png" in error.message
    assert "symbolic link" in error.message


def test_total_uncompressed_size_over_cap(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/a.png", image_bytes(1)), ("dog/b.png", image_bytes(2))]
    )

    error = rejected(zip_path, limits=ArchiveLimits(max_uncompressed_bytes=100))

    assert error.field == "archive"
    assert "100" in error.message


def test_too_many_files(tmp_path: Path) -> None:
    entries = [(f"cat/{i}.png", image_bytes(i)) for i in range(3)]
    zip_path = make_zip(tmp_path / "u.zip", entries)

    error = rejected(zip_path, limits=ArchiveLimits(max_files=2))

    assert error.field == "archive"
    assert "3 entries" in error.message


def test_high_compression_ratio_entry_is_a_zip_bomb(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/ok.png", image_bytes(1)), ("cat/zeros.png", bytes(5_000_000))]
    )

    error = rejected(zip_path)

    assert error.field == "archive"
    assert "cat/zeros.png" in error.message
    assert "zip bomb" in error.message


def test_small_highly_compressible_files_are_not_zip_bombs(tmp_path: Path) -> None:
    # A 128x128 black BMP mask deflates far beyond 200:1 but is harmless and legitimate.
    mask = io.BytesIO()
    Image.new("L", (128, 128), 0).save(mask, format="BMP")
    zip_path = make_zip(tmp_path / "u.zip", [("cat/mask.bmp", mask.getvalue())])

    result = scan(zip_path)

    assert [a.format for a in result.accepted] == ["BMP"]


def test_oversized_single_entry_rejects_the_archive(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", image_bytes(1))])

    error = rejected(zip_path, limits=ArchiveLimits(max_file_bytes=10))

    assert "cat/a.png" in error.message


def test_duplicate_entry_names_reject_the_archive(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as zf:
        zf.writestr("cat/a.png", image_bytes(1))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("cat/a.png", image_bytes(2))

    error = rejected(tmp_path / "u.zip")

    assert "cat/a.png" in error.message


def test_encrypted_entry_rejects_the_archive(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", image_bytes(1))])
    data = bytearray(zip_path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # general purpose flag: encrypted
    zip_path.write_bytes(bytes(data))

    assert "encrypted" in rejected(zip_path).message


def test_empty_archive_is_rejected(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [(".DS_Store", b"x")])

    assert rejected(zip_path).field == "archive"


def test_entry_inflating_past_declared_size_rejects_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", image_bytes(1))])

    # Stand in for a decoder that ignores the declared size; the read must stop anyway.
    def overflowing_open(self: zipfile.ZipFile, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(b"\x00" * 10_000_000)

    monkeypatch.setattr(zipfile.ZipFile, "open", overflowing_open)

    error = rejected(zip_path)

    assert "cat/a.png" in error.message
    assert "declared size" in error.message


# -------------------------------------------------------------------- per-file errors


def test_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/ok.png", image_bytes(1)), ("cat/notes.png", b"hello\n")]
    )

    result = scan(zip_path)

    error = only_error(result)
    assert (error.path, error.code) == ("cat/notes.png", "not_image")
    assert "cat/notes.png" in error.message
    assert [a.path for a in result.accepted] == ["cat/ok.png"]


def test_unsupported_image_format_is_not_an_image(tmp_path: Path) -> None:
    ico = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(ico, format="ICO")
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.ico", ico.getvalue())])

    assert only_error(scan(zip_path)).code == "not_image"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_is_corrupt(tmp_path: Path, cut: float) -> None:
    data = noisy_png()
    zip_path = make_zip(tmp_path / "u.zip", [("cat/broken.png", data[: int(len(data) * cut)])])

    error = only_error(scan(zip_path))

    assert (error.path, error.code) == ("cat/broken.png", "corrupt_image")
    assert "cat/broken.png" in error.message


def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    pixels = hashlib.shake_256(b"jpeg").digest(64 * 64 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), pixels).save(buffer, format="JPEG")
    data = buffer.getvalue()
    zip_path = make_zip(tmp_path / "u.zip", [("cat/broken.jpg", data[: len(data) // 2])])

    assert only_error(scan(zip_path)).code == "corrupt_image"


def test_png_signature_with_garbage_is_corrupt_not_unknown(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 5)])

    assert only_error(scan(zip_path)).code == "corrupt_image"


def test_zip_entry_with_bad_crc_is_corrupt(tmp_path: Path) -> None:
    name = "cat/a.png"
    zip_path = make_zip(tmp_path / "u.zip", [(name, image_bytes(1))], zipfile.ZIP_STORED)
    data = bytearray(zip_path.read_bytes())
    data[30 + len(name) + 40] ^= 0xFF  # inside the stored PNG, after the local header
    zip_path.write_bytes(bytes(data))

    error = only_error(scan(zip_path))

    assert (error.path, error.code) == (name, "corrupt_image")


def test_lying_central_directory_size_is_bounded_and_corrupt(tmp_path: Path) -> None:
    # The directory claims 20 bytes; the stream holds far more. Reading must stop at 20
    # and the CRC mismatch must surface as a damaged file.
    name = "cat/a.png"
    zip_path = make_zip(tmp_path / "u.zip", [(name, noisy_png())])
    data = bytearray(zip_path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 20)
    zip_path.write_bytes(bytes(data))

    error = only_error(scan(zip_path))

    assert (error.path, error.code) == (name, "corrupt_image")


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [
            ("cat/huge.png", png_header_only(20_000, 20_000)),  # over Pillow's own limit too
            ("cat/large.png", png_header_only(7_000, 7_000)),  # over our 40 MP only
        ],
    )

    result = scan(zip_path)

    assert codes(result) == {
        "cat/huge.png": "decompression_bomb",
        "cat/large.png": "decompression_bomb",
    }
    assert all(e.path in e.message for e in result.errors)


def test_decompression_bomb_with_lowered_pixel_limit(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [("cat/big.png", image_bytes(1, size=(100, 100))), ("cat/ok.png", image_bytes(2))],
    )

    result = scan(zip_path, limits=ArchiveLimits(max_image_pixels=5_000))

    error = only_error(result)
    assert (error.path, error.code) == ("cat/big.png", "decompression_bomb")
    assert "100x100" in error.message
    assert [a.path for a in result.accepted] == ["cat/ok.png"]


def test_unknown_label_in_imagefolder(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/a.png", image_bytes(1)), ("horse/b.png", image_bytes(2))]
    )

    error = only_error(scan(zip_path))

    assert (error.path, error.code) == ("horse/b.png", "unknown_label")
    assert "horse/b.png" in error.message
    assert "'horse'" in error.message


def test_file_outside_class_folder_has_missing_label(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [("cat/a.png", image_bytes(1)), ("loose.png", image_bytes(2)), ("train/b.png", b"")],
    )

    assert codes(scan(zip_path)) == {"loose.png": "missing_label", "train/b.png": "missing_label"}


def test_duplicate_image_within_archive(tmp_path: Path) -> None:
    same = image_bytes(7)
    zip_path = make_zip(tmp_path / "u.zip", [("dog/copy.png", same), ("cat/orig.png", same)])

    result = scan(zip_path)

    error = only_error(result)
    assert (error.path, error.code) == ("dog/copy.png", "duplicate_image")
    assert "dog/copy.png" in error.message
    assert "cat/orig.png" in error.message  # the first path, in sorted order
    assert [a.path for a in result.accepted] == ["cat/orig.png"]


def test_duplicate_image_against_known_hashes(tmp_path: Path) -> None:
    existing = image_bytes(9)
    zip_path = make_zip(
        tmp_path / "u.zip", [("cat/old.png", existing), ("cat/new.png", image_bytes(10))]
    )

    result = scan(zip_path, known_hashes={hashlib.sha256(existing).hexdigest().upper()})

    error = only_error(result)
    assert (error.path, error.code) == ("cat/old.png", "duplicate_image")
    assert "already in the dataset" in error.message
    assert "cat/old.png" in error.message


def test_bad_split_folder(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("train/cat/a.png", image_bytes(1)), ("val/cat/b.png", image_bytes(2))]
    )

    error = only_error(scan(zip_path))

    assert (error.path, error.code) == ("val/cat/b.png", "bad_split")
    assert "val/cat/b.png" in error.message


def test_manifest_per_row_errors(tmp_path: Path) -> None:
    manifest = (
        "path,label,split,metadata\n"
        "a.png,cat,train,\n"
        "gone.png,cat,train,\n"
        "b.png,cat,holdout,\n"
        "c.png,cat,train,{not json}\n"
        'd.png,cat,train,"[1, 2]"\n'
        "e.png,,train,\n"
        "f.png,zebra,train,\n"
        "a.png,dog,train,\n"
        ",cat,train,\n"
    )
    entries = [("manifest.csv", manifest.encode())]
    entries += [(f"{c}.png", image_bytes(i)) for i, c in enumerate("abcdef")]
    zip_path = make_zip(tmp_path / "u.zip", entries)

    result = scan(zip_path)

    assert [a.path for a in result.accepted] == ["a.png"]
    by_path: dict[str, list[str]] = {}
    for error in result.errors:
        by_path.setdefault(error.path, []).append(error.code)
        if error.path:
            assert error.path in error.message
    assert by_path == {
        "": ["missing_file"],
        "a.png": ["duplicate_image"],
        "b.png": ["bad_split"],
        "c.png": ["bad_metadata"],
        "d.png": ["bad_metadata"],
        "e.png": ["missing_label"],
        "f.png": ["unknown_label"],
        "gone.png": ["missing_file"],
    }


def test_json_manifest_per_row_errors(tmp_path: Path) -> None:
    manifest = [
        {"path": "a.png", "label": "cat", "metadata": "plate 3"},
        {"path": "b.png", "label": "cat", "split": 5},
        {"path": "c.png", "label": ["cat"]},
        {"path": "missing.png", "label": "cat"},
    ]
    entries = [("manifest.json", json.dumps(manifest).encode())]
    entries += [(f"{c}.png", image_bytes(i)) for i, c in enumerate("abc")]

    result = scan(make_zip(tmp_path / "u.zip", entries))

    assert codes(result) == {
        "a.png": "bad_metadata",
        "b.png": "bad_split",
        "c.png": "unknown_label",
        "missing.png": "missing_file",
    }


# ------------------------------------------------------------ manifest-level rejections


@pytest.mark.parametrize(
    ("manifest", "missing"),
    [("path,split\na.png,train\n", "label"), ("file,label\na.png,cat\n", "path")],
)
def test_csv_manifest_missing_required_column(tmp_path: Path, manifest: str, missing: str) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("manifest.csv", manifest.encode()), ("a.png", image_bytes(1))]
    )

    error = rejected(zip_path)

    assert error.field == "manifest"
    assert repr(missing) in error.message


def test_json_manifest_item_missing_label(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [("manifest.json", b'[{"path": "a.png"}]'), ("a.png", image_bytes(1))],
    )

    error = rejected(zip_path)

    assert error.field == "manifest"
    assert "'label'" in error.message


@pytest.mark.parametrize(
    "manifest", [b"[{'path': 'a.png'}]", b'{"path": "a.png", "label": "cat"}', b"[]", b"[1]"]
)
def test_invalid_json_manifest(tmp_path: Path, manifest: bytes) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("manifest.json", manifest), ("a.png", image_bytes(1))]
    )

    assert rejected(zip_path).field == "manifest"


def test_json_manifest_rejects_nan(tmp_path: Path) -> None:
    manifest = b'[{"path": "a.png", "label": "cat", "metadata": {"x": NaN}}]'
    zip_path = make_zip(tmp_path / "u.zip", [("a.png", image_bytes(1))])

    assert rejected(zip_path, manifest=manifest, manifest_format="json").field == "manifest"


def test_two_manifests_are_ambiguous(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip",
        [("manifest.csv", b"path,label\n"), ("manifest.json", b"[]"), ("a.png", image_bytes(1))],
    )

    assert rejected(zip_path).field == "manifest"


def test_csv_manifest_without_rows(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "u.zip", [("manifest.csv", b"path,label\n"), ("a.png", image_bytes(1))]
    )

    assert "no rows" in rejected(zip_path).message


# ------------------------------------------------------------------------ re-reading


def test_read_image_bytes_returns_the_scanned_bytes(tmp_path: Path) -> None:
    data = image_bytes(1)
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", data), ("dog/b.png", image_bytes(2))])
    result = scan(zip_path)

    assert read_image_bytes(zip_path, "cat/a.png") == data
    assert read_image_bytes(zip_path, "cat/a.png", expected_sha256=result.accepted[0].sha256)
    with pytest.raises(ArchiveRejected):
        read_image_bytes(zip_path, "cat/a.png", expected_sha256="0" * 64)
    with pytest.raises(FileNotFoundError):
        read_image_bytes(zip_path, "cat/nope.png")
    with pytest.raises(ArchiveRejected):
        read_image_bytes(zip_path, "../cat/a.png")

    pairs = list(iter_image_bytes(zip_path, result.accepted))
    assert [(image.path, len(blob)) for image, blob in pairs] == [
        (a.path, a.size_bytes) for a in result.accepted
    ]


def test_scan_accepts_an_open_file(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", image_bytes(1))])

    with zip_path.open("rb") as handle:
        result = scan_archive(handle, labels=LABELS)

    assert len(result.accepted) == 1


def test_default_split_must_be_allowed(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "u.zip", [("cat/a.png", image_bytes(1))])

    with pytest.raises(ValueError, match="default_split"):
        scan(zip_path, default_split="holdout")


def test_module_does_not_import_django() -> None:
    module = Path(__file__).resolve().parents[2] / "annotations" / "archive.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('archive_probe', {str(module)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "sys.modules['archive_probe'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "print(any(name == 'django' or name.startswith('django.') for name in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
