"""What a file is, from its bytes (names lie): the format, and the family that knows how to render it.

A file's name is used only to say more about a file whose bytes are not recognised: ``report.pdf``
holding text is ``corrupt_media`` ("named .pdf but ..."), bytes of no known kind with no telling name
are ``unsupported_media``.
"""

from __future__ import annotations

import io
import zipfile

from jobs.errors import CorruptMedia, UnsupportedMedia

IMAGE_FORMATS = ("png", "jpeg", "gif", "tiff", "webp")
OFFICE_FORMATS = ("docx", "pptx", "odt", "odp", "doc", "ppt")  # converted to PDF by LibreOffice
SPREADSHEETS = ("xlsx", "ods", "xls")
FAMILY = {"pdf": "pdf", **dict.fromkeys(IMAGE_FORMATS, "image"), **dict.fromkeys(OFFICE_FORMATS, "office")}
_EXTENSIONS = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff", **{f: f for f in (*FAMILY, *SPREADSHEETS)}}

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Compound File: legacy .doc/.ppt/.xls
# Stream names in an OLE directory (UTF-16LE) say which application wrote it.
_OLE_STREAMS = (("WordDocument", "doc"), ("PowerPoint Document", "ppt"), ("Workbook", "xls"))
_OOXML = (("word/document.xml", "docx"), ("ppt/presentation.xml", "pptx"), ("xl/workbook.xml", "xlsx"))
_ODF = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
}


def sniff(data: bytes) -> str | None:
    """The format of ``data`` (a key of FAMILY, or a spreadsheet), or None when not recognised."""
    if b"%PDF-" in data[:1024]:  # readers accept junk before the header within 1 KiB
        return "pdf"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(_OLE):
        return next((fmt for name, fmt in _OLE_STREAMS if name.encode("utf-16-le") in data), None)
    if data.startswith(b"PK\x03\x04"):
        return _zip_format(data)
    return None


def _zip_format(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
            if "mimetype" in names:
                return _ODF.get(z.read("mimetype").decode("ascii", "replace").strip())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None  # a cut-short archive: unreadable, whatever it claims to be
    return next((fmt for member, fmt in _OOXML if member in names), None)


def family(data: bytes, name: str = "") -> tuple[str, str]:
    """(family, format) — family one of pdf, image, office — or the error that says why not."""
    if not data:
        raise CorruptMedia("the file is empty (0 bytes)")
    fmt = sniff(data)
    if fmt in SPREADSHEETS:
        raise UnsupportedMedia(f"spreadsheets ({fmt.upper()}) are not supported; export the sheets as PDF")
    if fmt is not None:
        return FAMILY[fmt], fmt
    claimed = _EXTENSIONS.get(name.rsplit(".", 1)[-1].lower()) if "." in name else None
    if claimed is not None:
        raise CorruptMedia(
            f"the file is named .{claimed} but is not a readable {claimed.upper()}; "
            f"it looks like {looks_like(data)}"
        )
    raise UnsupportedMedia(
        "not a PDF, an image (PNG, JPEG, WebP, TIFF, GIF) or an office file "
        f"(DOC, DOCX, PPT, PPTX, ODT, ODP); it looks like {looks_like(data)}"
    )


def looks_like(data: bytes) -> str:
    """What a file seems to be, for an error message, without quoting a byte of it: an error is shown to
    whoever submitted the item, and must never serve as a way to read an object's content."""
    head = data[:512]
    if head.lstrip().startswith((b"{", b"[")):
        return "JSON or JSONL text"
    if head.lstrip()[:1] == b"<":
        return "HTML or XML text"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # binary, or a character cut at the 512th byte
        text = head[:-3].decode("utf-8", "replace")
    if text and "\ufffd" not in text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "plain text"
    return f"binary data of an unknown format ({len(data)} bytes)"
