"""Corpus readers on the real shared data, format detection, errors, builtin corpus, HF datasets."""
import gzip
import json
import sys

import pytest

from lightning_bert.data.corpus import CorpusError, builtin_documents, hf_documents, read_documents
from lightning_bert.errors import UserError


def assert_clean(docs):
    for doc in docs:
        assert doc and all(line and line == line.strip() for line in doc.split("\n"))


@pytest.mark.parametrize(
    "rel, fmt, count",
    [
        ("wikipedia-en/train.txt", "auto", 1034),
        ("wikipedia-en/valid.txt", "wikiextractor", 122),
        ("wikitext-2-raw/wiki.valid.raw", "auto", 60),
        ("wikitext-2-raw/wiki.test.raw", "wikitext", 60),  # 62 title-like lines, 2 are formulas
        ("gutenberg/*.txt", "book", 7),  # a glob, one document per file
    ],
)
def test_real_files_document_counts(shared_data, rel, fmt, count):
    docs = read_documents([str(shared_data / rel)], fmt)
    assert len(docs) == count
    assert_clean(docs)


def test_gzipped_wikiextractor_shard(shared_data):
    path = shared_data / "wikipedia-en/train_extra.txt.gz"
    docs = read_documents([str(path)])
    # The shard holds 3152 <doc> blocks; one ("Cogency") has a title and no text, so it is dropped.
    assert len(docs) == 3151
    assert_clean(docs)


def test_wikiextractor_drops_title_line(shared_data):
    docs = read_documents([str(shared_data / "wikipedia-en/train.txt")], "wikiextractor")
    assert docs[0].startswith("Anarchism is a political philosophy")
    assert "<doc" not in docs[0] and "</doc>" not in docs[-1]


def test_wikitext_undoes_spacing_and_keeps_headings(shared_data):
    docs = read_documents([str(shared_data / "wikitext-2-raw/wiki.valid.raw")])
    text = "\n".join(docs)
    assert "@-@" not in text and "@,@" not in text and "@.@" not in text
    assert docs[0].startswith("Homarus gammarus , known as the European lobster")
    assert "\nDescription\n" in docs[0]
    assert not any(line.startswith("=") for line in text.split("\n"))
    assert "3.1 – 3.3 in" in docs[0] and "red-tipped" in docs[0]


def test_wikitext_formula_lines_inside_a_paragraph_are_text(shared_data):
    # wiki.test.raw: " = 1 rad / s and a nominal impedance k = " continues a paragraph (no blank line
    # before it), so it is kept verbatim and "Constant k filter" stays one document.
    docs = read_documents([str(shared_data / "wikitext-2-raw/wiki.test.raw")])
    constant_k = [d for d in docs if d.startswith("Constant k filters")]
    assert len(constant_k) == 1
    lines = constant_k[0].split("\n")
    assert "= 1 rad / s and a nominal impedance k =" in lines and "= 1 henry and capacitance C =" in lines
    assert not any(d.startswith(("1 Ω", "1 farad")) for d in docs)


def test_book_joins_hard_wrapped_lines(shared_data):
    docs = read_documents(sorted(str(p) for p in (shared_data / "gutenberg").glob("*.txt")), "book")
    emma = docs[0].split("\n")  # sorted: austen-emma.txt first
    assert emma[:3] == ["[Emma by Jane Austen 1816]", "VOLUME I", "CHAPTER I"]
    assert emma[3].startswith("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy")
    assert emma[3].endswith("with very little to distress or vex her.")


def test_text_format_blank_line_separated(tmp_path, shared_data):
    paragraphs = read_documents([str(shared_data / "wikipedia-en/valid.txt")])[0].split("\n")[:6]
    path = tmp_path / "corpus.txt"
    # Documents of two lines each, separated by one, two, or whitespace-only blank lines.
    path.write_text(f"\n{paragraphs[0]}\n{paragraphs[1]}\n\n{paragraphs[2]}\n{paragraphs[3]}\n \n\n{paragraphs[4]}  \n{paragraphs[5]}\n")
    for fmt in ("auto", "text"):
        docs = read_documents([str(path)], fmt)
        assert docs == ["\n".join(paragraphs[i : i + 2]) for i in (0, 2, 4)]


def write_jsonl(path, docs, field="text", compress=False):
    data = "".join(json.dumps({"id": i, field: d}) + "\n" for i, d in enumerate(docs)).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def test_jsonl(tmp_path, shared_data):
    real = read_documents([str(shared_data / "wikipedia-en/valid.txt")])[:20]
    assert read_documents([write_jsonl(tmp_path / "a.jsonl", real)]) == real
    assert read_documents([write_jsonl(tmp_path / "a.txt", real)], "auto") == real  # detected by content
    body = write_jsonl(tmp_path / "b.jsonl", real, field="body")
    assert read_documents([body], "jsonl", text_field="body") == real


def test_gzip_detected_by_magic_bytes(tmp_path, shared_data):
    real = read_documents([str(shared_data / "wikipedia-en/valid.txt")])[:5]
    assert read_documents([write_jsonl(tmp_path / "no_suffix", real, compress=True)]) == real
    text_gz = tmp_path / "docs.txt.gz"
    text_gz.write_bytes(gzip.compress("\n\n".join(real).encode()))
    assert read_documents([str(text_gz)], "text") == real


def test_auto_detects_each_file(tmp_path, shared_data):
    real = read_documents([str(shared_data / "wikipedia-en/valid.txt")])[:3]
    paths = [
        str(shared_data / "wikitext-2-raw/wiki.valid.raw"),
        str(shared_data / "wikipedia-en/valid.txt"),
        write_jsonl(tmp_path / "x.jsonl", real),
        str(shared_data / "gutenberg/austen-emma.txt"),  # plain text: blank-line separated paragraphs
    ]
    docs = read_documents(paths)
    n_emma = len(read_documents([paths[3]], "text"))
    assert n_emma > 1000
    assert len(docs) == 60 + 122 + 3 + n_emma


def error_for(paths, fmt="auto"):
    with pytest.raises(CorpusError) as info:
        read_documents(paths, fmt)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_errors_are_one_line_and_name_the_file(tmp_path, shared_data):
    plain = tmp_path / "plain.txt"
    plain.write_text("Just some text.\n\nAnother paragraph.\n")
    assert issubclass(CorpusError, UserError)

    assert str(tmp_path / "missing.txt") in error_for([str(tmp_path / "missing.txt")])
    assert "nothing*.txt" in error_for([str(tmp_path / "nothing*.txt")])
    msg = error_for([str(plain)], "nope")
    assert "'nope'" in msg and all(f in msg for f in ("auto", "text", "wikiextractor", "wikitext", "jsonl", "book"))
    assert f"no <doc> blocks found in {plain}" in error_for([str(plain)], "wikiextractor")
    assert str(plain) in error_for([str(plain)], "wikitext")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n')
    assert f"{bad}:3" in error_for([str(bad)])
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n')
    assert f"{nofield}:1" in error_for([str(nofield)])

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    assert str(latin1) in error_for([str(latin1)])
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(b"some text")[:12])
    assert str(broken_gz) in error_for([str(broken_gz)])
    assert str(tmp_path) in error_for([str(tmp_path)])  # a directory

    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert str(empty) in error_for([str(empty)])
    assert str(empty) in error_for([str(empty)], "text")


def test_builtin_stdlib_docstrings():
    docs = builtin_documents()
    assert len(docs) >= 400
    assert sum(len(d) for d in docs) > 1_000_000
    assert_clean(docs)
    assert any(d.startswith("Record of phased-in incompatible language changes.") for d in docs)  # __future__
    assert builtin_documents() == docs


def test_hf_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(CorpusError, match="pip install datasets"):
        hf_documents("wikitext/wikitext-2-raw-v1")


def test_hf_local_dataset(tmp_path, shared_data, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="optional: pip install datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    real = read_documents([str(shared_data / "wikipedia-en/valid.txt")])[:10]
    data_dir = tmp_path / "ds"
    data_dir.mkdir()
    write_jsonl(data_dir / "train.jsonl", real)
    assert hf_documents(str(data_dir)) == real
    assert hf_documents(str(data_dir / "train.jsonl")) == real
    with pytest.raises(CorpusError, match="no column 'body'"):
        hf_documents(str(data_dir), text_field="body")
