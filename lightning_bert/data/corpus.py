"""Pretraining documents: read from files (several formats), a Hugging Face dataset, or the builtin
stdlib-docstring corpus. Every document is one string, paragraphs separated by "\\n"."""
from __future__ import annotations

import ast
import functools
import glob
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional, Sequence

from ..errors import UserError

log = logging.getLogger(__name__)


class CorpusError(UserError):
    """A corpus path, format or data set that cannot be read."""


def _clean(text: str) -> str:
    """Strip every line and drop the empty ones."""
    return "\n".join(line for line in (raw.strip() for raw in text.splitlines()) if line)


def _clean_lines(lines: Iterable[str]) -> str:
    return "\n".join(p for line in lines for p in (raw.strip() for raw in line.splitlines()) if p)


def _blocks(text: str) -> list[str]:
    """Split on one or more blank lines (whitespace-only lines count as blank)."""
    return re.split(r"\n[ \t\r\f\v]*\n\s*", text)


def _blank(line: str) -> bool:
    return not line.strip(" \t\r\f\v")  # the blank lines _blocks splits on


# ---- one reader per format: (lines, path, text_field) -> documents, streamed ----------------------
# Readers see one line at a time (without its "\n"), so a file never has to fit in memory: only the
# document being read does.

def _read_text(lines: Iterable[str], path: str, field: str) -> Iterator[str]:
    block: list[str] = []
    for line in lines:
        if not _blank(line):
            block.append(line)
        elif block:
            yield _clean_lines(block)
            block = []
    if block:
        yield _clean_lines(block)


def _read_book(lines: Iterable[str], path: str, field: str) -> Iterator[str]:
    # One file = one document; hard-wrapped lines inside a paragraph are joined with spaces.
    paragraphs: list[str] = []
    words: list[str] = []
    for line in lines:
        if not _blank(line):
            words += line.split()
        elif words:
            paragraphs.append(" ".join(words))
            words = []
    if words:
        paragraphs.append(" ".join(words))
    yield "\n".join(paragraphs)


def _read_wikiextractor(lines: Iterable[str], path: str, field: str) -> Iterator[str]:
    body: Optional[list[str]] = None  # lines of the open <doc> block, title line first
    found = False
    for line in lines:
        if body is None:
            if line.startswith("<doc") and ">" in line:
                body, found = [], True
        elif line.startswith("</doc>"):
            yield _clean_lines(body[1:])  # drop the title line
            body = None
        else:
            body.append(line)
    if not found:
        raise CorpusError(f"no <doc> blocks found in {path} (format 'wikiextractor' needs WikiExtractor output)")


_WT_TITLE = re.compile(r"= ([^=].*) =")
_WT_HEADING = re.compile(r"(?:= )+(.*?)(?: =)+")
_WT_SPACING = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))


def _read_wikitext(lines: Iterable[str], path: str, field: str) -> Iterator[str]:
    doc: list[str] = []  # text before the first title (normally none) is a document too
    titles, after_blank = 0, True
    for raw in lines:
        for spaced, plain in _WT_SPACING:
            raw = raw.replace(spaced, plain)
        line = raw.strip()
        # A title or heading follows a blank line: a ` = ... = ` line inside a paragraph is a formula
        # (wiki.test.raw has two), kept as text.
        if after_blank and _WT_TITLE.fullmatch(line):  # ` = Title = ` starts an article; the title is dropped
            if doc:
                yield "\n".join(doc)
            doc = []
            titles += 1
        elif line:
            heading = _WT_HEADING.fullmatch(line) if after_blank else None  # ` = = Section = = ` kept as a line
            doc.append(heading.group(1) if heading else line)
        after_blank = not line
    if not titles:
        raise CorpusError(f"no ' = Title = ' articles found in {path} (format 'wikitext' needs WikiText raw files)")
    if doc:
        yield "\n".join(doc)


def _read_jsonl(lines: Iterable[str], path: str, field: str) -> Iterator[str]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            msg = f"{path}:{lineno}: bad JSON line ({e.msg}); jsonl needs one JSON object per line"
            raise CorpusError(msg) from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise CorpusError(f"{path}:{lineno}: no string field {field!r} in this JSON line (set the text field)")
        yield _clean(obj[field])


READERS: dict[str, Callable[[Iterable[str], str, str], Iterator[str]]] = {
    "text": _read_text,
    "wikiextractor": _read_wikiextractor,
    "wikitext": _read_wikitext,
    "jsonl": _read_jsonl,
    "book": _read_book,
}
FORMATS = ("auto", *READERS)


def detect_format(path: str, text: str) -> str:
    """Guess a file's format from its first non-empty line (and a .jsonl/.json name)."""
    head = text.lstrip()
    first = head.split("\n", 1)[0].strip()
    if head.startswith("<doc "):
        return "wikiextractor"
    if _WT_TITLE.fullmatch(first):
        return "wikitext"
    if path.removesuffix(".gz").endswith((".jsonl", ".json")):
        return "jsonl"
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except json.JSONDecodeError:
            pass
    return "text"


def _open_binary(path: str) -> BinaryIO:
    if not os.path.exists(path):
        raise CorpusError(f"corpus file not found: {path} (give existing files or globs)")
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory (give files or a glob such as {os.path.join(path, '*')})")
    try:
        f = open(path, "rb")
        if f.read(2) == b"\x1f\x8b":
            f.close()
            return gzip.open(path, "rb")  # type: ignore[return-value]
        f.seek(0)
        return f
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e} (corpus files must be readable, optionally gzipped)") from None


def read_lines(path: str) -> Iterator[str]:
    """The lines of a UTF-8 (optionally gzipped) file, one at a time, without their line ends."""
    offset = 0
    with _open_binary(path) as f:
        try:
            for raw in f:
                try:
                    line = raw.decode("utf-8-sig" if offset == 0 else "utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusError(f"{path} is not UTF-8 text (byte {offset + e.start}); corpus files must be UTF-8") from None
                offset += len(raw)
                yield line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line
        except (OSError, EOFError, zlib.error) as e:
            raise CorpusError(f"cannot read {path}: {e} (corpus files must be readable, optionally gzipped)") from None


def _first_line(path: str) -> str:
    for line in read_lines(path):
        if line.strip():
            return line
    return ""


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Expand globs (sorted); plain paths are kept as given."""
    files: list[str] = []
    for p in paths:
        if glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise CorpusError(f"no files match {p!r}")
            files += matches
        else:
            files.append(p)
    return files


def iter_documents(paths: Sequence[str], fmt: str = "auto", text_field: str = "text") -> Iterator[str]:
    """Stream the documents of the given files/globs, file by file and line by line; `fmt` is one of
    FORMATS ('auto' detects per file). Only one document is held in memory at a time."""
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if isinstance(paths, str):
        paths = [paths]
    total = 0
    for path in expand_paths(paths):
        file_fmt = detect_format(path, _first_line(path)) if fmt == "auto" else fmt
        found = 0
        for doc in READERS[file_fmt](read_lines(path), path, text_field):
            if doc:
                found += 1
                yield doc
        if not found and fmt != "auto":
            raise CorpusError(f"no documents found in {path} (read as format {fmt!r})")
        log.info("read %d documents from %s (%s)", found, path, file_fmt)
        total += found
    if not total:
        raise CorpusError(f"the corpus is empty: no documents in {', '.join(paths) or '(no paths)'}")


def read_documents(paths: Sequence[str], fmt: str = "auto", text_field: str = "text") -> list[str]:
    """All documents of the given files/globs as a list (small corpora; prefer iter_documents)."""
    return list(iter_documents(paths, fmt, text_field))


# ---- builtin corpus: the docstrings of the Python standard library --------------------------------

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstring_paragraphs(doc: str) -> list[str]:
    # get_docstring(clean=True) applied inspect.cleandoc; hard-wrapped lines become one paragraph.
    return [" ".join(block.split()) for block in _blocks(doc) if block.strip()]


def _stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        files += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(files, key=lambda p: os.path.relpath(p, root))


@functools.lru_cache(maxsize=1)
def _stdlib_documents() -> tuple[str, ...]:
    docs = []
    for path in _stdlib_files():
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), filename=path)
        except (SyntaxError, ValueError, OSError):
            continue  # a few stdlib files are templates or target other Python versions
        nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)), key=lambda n: getattr(n, "lineno", 0))
        paragraphs = [p for n in nodes for p in _docstring_paragraphs(ast.get_docstring(n) or "")]
        if paragraphs:
            docs.append("\n".join(paragraphs))
    return tuple(docs)


def builtin_documents() -> list[str]:
    """One document per stdlib module (its docstrings), parsed with `ast`, never imported."""
    return list(_stdlib_documents())


# ---- Hugging Face datasets ------------------------------------------------------------------------

_LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _hf_dataset(name: str, split: str, text_field: str) -> Any:
    """`datasets.load_dataset` for NAME, NAME/CONFIG, ORG/NAME/CONFIG, or a local dir/file (memory-mapped)."""
    try:
        import datasets
    except ImportError:
        msg = f"reading Hugging Face dataset {name!r} needs the datasets package: pip install datasets"
        raise CorpusError(msg) from None
    args, kwargs = hf_load_args(name)
    try:
        ds = datasets.load_dataset(*args, split=split, **kwargs)
    except (OSError, ValueError, ConnectionError) as e:
        msg = str(e).strip().split("\n")[0]
        raise CorpusError(f"cannot load Hugging Face dataset {name!r} split {split!r}: {msg}") from None
    if text_field not in ds.column_names:
        raise CorpusError(f"dataset {name!r} has no column {text_field!r}; columns: {', '.join(ds.column_names)}")
    return ds


def hf_load_args(name: str) -> tuple[list[str], dict[str, Any]]:
    """load_dataset's positional and keyword arguments for a dataset name, local directory or file."""
    if os.path.isfile(name):
        ext = os.path.splitext(name.removesuffix(".gz"))[1]
        if ext not in _LOCAL_BUILDERS:
            raise CorpusError(f"cannot load {name} as a dataset; allowed file types: {', '.join(_LOCAL_BUILDERS)}")
        return [_LOCAL_BUILDERS[ext]], {"data_files": name}
    if os.path.isdir(name) or name.count("/") not in (1, 2):
        return [name], {}
    return name.rsplit("/", 1), {}


def _iter_hf(ds: Any, name: str, split: str, text_field: str) -> Iterator[str]:
    found = 0
    for batch in ds.select_columns([text_field]).iter(batch_size=1024):  # column batches, not the whole column
        for text in batch[text_field]:
            doc = _clean(text) if isinstance(text, str) else ""
            if doc:
                found += 1
                yield doc
    if not found:
        raise CorpusError(f"dataset {name!r} split {split!r} has no non-empty {text_field!r} texts")


def hf_documents(name: str, split: str = "train", text_field: str = "text") -> list[str]:
    """Documents from `datasets.load_dataset`: NAME, NAME/CONFIG, ORG/NAME/CONFIG, or a local dir/file."""
    return list(_iter_hf(_hf_dataset(name, split, text_field), name, split, text_field))


# ---- a corpus as a source: re-readable documents with a cheap identity ----------------------------

SOURCE_VERSION = 2  # bump when a reader changes what documents it yields (2: WikiText titles after blanks)
SAMPLE_BYTES = 1 << 16  # bytes hashed at each of SAMPLES evenly spaced places of a file
SAMPLES = 16


@dataclass(frozen=True)
class DocumentSource:
    """Documents that can be read again and again (each `iter` streams them afresh) and `key`, an
    identity found without reading them: file sizes, mtimes and sampled bytes; a dataset's fingerprint."""

    key: str
    open: Callable[[], Iterator[str]]
    limit: Optional[int] = None  # the first `limit` documents only (data.max_documents)

    def __iter__(self) -> Iterator[str]:
        docs = self.open()
        return itertools.islice(docs, self.limit) if self.limit else docs


def file_fingerprint(path: str) -> list[Any]:
    """(size, mtime, hash of SAMPLES slices): changes when the file does, costs ~1 MB of reading."""
    st = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for i in range(SAMPLES):
            f.seek(max(0, (st.st_size - SAMPLE_BYTES) * i // max(1, SAMPLES - 1)))
            digest.update(f.read(SAMPLE_BYTES))
    return [st.st_size, st.st_mtime_ns, digest.hexdigest()[:16]]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([SOURCE_VERSION, *parts]).encode()).hexdigest()[:16]


def file_source(paths: Sequence[str], fmt: str = "auto", text_field: str = "text",
                limit: Optional[int] = None) -> DocumentSource:
    """The documents of files/globs, identified by their fingerprints (their content is not read here)."""
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; allowed: {', '.join(FORMATS)}")
    files = expand_paths([paths] if isinstance(paths, str) else paths)
    for path in files:
        _open_binary(path).close()  # missing, a directory, unreadable: fail now, before any work
    key = _key("files", fmt, text_field if fmt in ("auto", "jsonl") else "", limit, [file_fingerprint(p) for p in files])
    return DocumentSource(key, functools.partial(iter_documents, files, fmt, text_field), limit)


def builtin_source(limit: Optional[int] = None) -> DocumentSource:
    """The stdlib docstrings, identified by the stdlib files' names, sizes and mtimes (parsed only if read)."""
    root = sysconfig.get_paths()["stdlib"]
    stats = [(os.path.relpath(p, root), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in _stdlib_files()]
    return DocumentSource(_key("builtin", sys.version, limit, stats), lambda: iter(_stdlib_documents()), limit)


def hf_source(name: str, split: str = "train", text_field: str = "text", limit: Optional[int] = None) -> DocumentSource:
    """A Hugging Face dataset (memory-mapped Arrow), identified by the dataset's own fingerprint."""
    ds = _hf_dataset(name, split, text_field)
    key = _key("hf", name, split, text_field, limit, ds._fingerprint)
    return DocumentSource(key, lambda: _iter_hf(ds, name, split, text_field), limit)
