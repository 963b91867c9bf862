"""Pretraining documents: read from files (several formats), a Hugging Face dataset, or the builtin
stdlib-docstring corpus. Every document is one string, paragraphs separated by "\\n"."""
from __future__ import annotations

import ast
import functools
import glob
import gzip
import json
import logging
import os
import re
import sysconfig
import zlib
from typing import Callable, Sequence

from ..errors import UserError

log = logging.getLogger(__name__)


class CorpusError(UserError):
    """A corpus path, format or data set that cannot be read."""


def _clean(text: str) -> str:
    """Strip every line and drop the empty ones."""
    return "\n".join(line for line in (raw.strip() for raw in text.splitlines()) if line)


def _blocks(text: str) -> list[str]:
    """Split on one or more blank lines (whitespace-only lines count as blank)."""
    return re.split(r"\n[ \t\r\f\v]*\n\s*", text)


# ---- one reader per format: (text, path, text_field) -> documents ---------------------------------

def _read_text(text: str, path: str, field: str) -> list[str]:
    return [_clean(block) for block in _blocks(text)]


def _read_book(text: str, path: str, field: str) -> list[str]:
    # One file = one document; hard-wrapped lines inside a paragraph are joined with spaces.
    return ["\n".join(" ".join(block.split()) for block in _blocks(text) if block.strip())]


_DOC = re.compile(r"^<doc[^>]*>[^\n]*\n(.*?)^</doc>", re.M | re.S)


def _read_wikiextractor(text: str, path: str, field: str) -> list[str]:
    bodies = _DOC.findall(text)
    if not bodies:
        raise CorpusError(f"no <doc> blocks found in {path} (format 'wikiextractor' needs WikiExtractor output)")
    return [_clean(body.split("\n", 1)[1] if "\n" in body else "") for body in bodies]  # drop title line


_WT_TITLE = re.compile(r"= ([^=].*) =")
_WT_HEADING = re.compile(r"(?:= )+(.*?)(?: =)+")


def _read_wikitext(text: str, path: str, field: str) -> list[str]:
    for spaced, plain in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):
        text = text.replace(spaced, plain)
    docs: list[list[str]] = [[]]  # text before the first title (normally none) is a document too
    titles = 0
    for line in (raw.strip() for raw in text.split("\n")):
        if _WT_TITLE.fullmatch(line):  # ` = Title = ` starts an article; the title itself is dropped
            docs.append([])
            titles += 1
        elif line:
            heading = _WT_HEADING.fullmatch(line)  # ` = = Section = = ` kept as a line, like WikiExtractor
            docs[-1].append(heading.group(1) if heading else line)
    if not titles:
        raise CorpusError(f"no ' = Title = ' articles found in {path} (format 'wikitext' needs WikiText raw files)")
    return ["\n".join(lines) for lines in docs]


def _read_jsonl(text: str, path: str, field: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            msg = f"{path}:{lineno}: bad JSON line ({e.msg}); jsonl needs one JSON object per line"
            raise CorpusError(msg) from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise CorpusError(f"{path}:{lineno}: no string field {field!r} in this JSON line (set the text field)")
        docs.append(_clean(obj[field]))
    return docs


READERS: dict[str, Callable[[str, str, str], list[str]]] = {
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


def _load(path: str) -> str:
    """Read a file as UTF-8 text, gunzipping it when it starts with the gzip magic bytes."""
    if not os.path.exists(path):
        raise CorpusError(f"corpus file not found: {path} (give existing files or globs)")
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory (give files or a glob such as {os.path.join(path, '*')})")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except (OSError, EOFError, zlib.error) as e:
        raise CorpusError(f"cannot read {path}: {e} (corpus files must be readable, optionally gzipped)") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}); corpus files must be UTF-8") from None


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


def read_documents(paths: Sequence[str], fmt: str = "auto", text_field: str = "text") -> list[str]:
    """Read all documents of the given files/globs; `fmt` is one of FORMATS ('auto' detects per file)."""
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if isinstance(paths, str):
        paths = [paths]
    docs: list[str] = []
    for path in expand_paths(paths):
        text = _load(path)
        file_fmt = detect_format(path, text) if fmt == "auto" else fmt
        found = [d for d in READERS[file_fmt](text, path, text_field) if d]
        if not found and fmt != "auto":
            raise CorpusError(f"no documents found in {path} (read as format {fmt!r})")
        log.info("read %d documents from %s (%s)", len(found), path, file_fmt)
        docs += found
    if not docs:
        raise CorpusError(f"the corpus is empty: no documents in {', '.join(paths) or '(no paths)'}")
    return docs


# ---- builtin corpus: the docstrings of the Python standard library --------------------------------

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstring_paragraphs(doc: str) -> list[str]:
    # get_docstring(clean=True) applied inspect.cleandoc; hard-wrapped lines become one paragraph.
    return [" ".join(block.split()) for block in _blocks(doc) if block.strip()]


@functools.lru_cache(maxsize=1)
def _stdlib_documents() -> tuple[str, ...]:
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        files += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    docs = []
    for path in sorted(files, key=lambda p: os.path.relpath(p, root)):
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


def hf_documents(name: str, split: str = "train", text_field: str = "text") -> list[str]:
    """Documents from `datasets.load_dataset`: NAME, NAME/CONFIG, ORG/NAME/CONFIG, or a local dir/file."""
    try:
        import datasets
    except ImportError:
        msg = f"reading Hugging Face dataset {name!r} needs the datasets package: pip install datasets"
        raise CorpusError(msg) from None
    if os.path.isfile(name):
        ext = os.path.splitext(name.removesuffix(".gz"))[1]
        if ext not in _LOCAL_BUILDERS:
            raise CorpusError(f"cannot load {name} as a dataset; allowed file types: {', '.join(_LOCAL_BUILDERS)}")
        args, kwargs = [_LOCAL_BUILDERS[ext]], {"data_files": name}
    elif os.path.isdir(name) or name.count("/") not in (1, 2):
        args, kwargs = [name], {}
    else:
        args, kwargs = name.rsplit("/", 1), {}
    try:
        ds = datasets.load_dataset(*args, split=split, **kwargs)
    except (OSError, ValueError, ConnectionError) as e:
        msg = str(e).strip().split("\n")[0]
        raise CorpusError(f"cannot load Hugging Face dataset {name!r} split {split!r}: {msg}") from None
    if text_field not in ds.column_names:
        raise CorpusError(f"dataset {name!r} has no column {text_field!r}; columns: {', '.join(ds.column_names)}")
    docs = [d for d in (_clean(t) for t in ds[text_field] if isinstance(t, str)) if d]
    if not docs:
        raise CorpusError(f"dataset {name!r} split {split!r} has no non-empty {text_field!r} texts")
    return docs
