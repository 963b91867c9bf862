"""Sentence splitter: one hand-written case per rule, plus statistics on real Wikipedia text."""
import pytest

from lightning_bert.data.corpus import read_documents
from lightning_bert.data.sentences import ABBREVIATIONS, split_sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        ("It rained. Then it stopped! Why? Nobody knows.", ["It rained.", "Then it stopped!", "Why?", "Nobody knows."]),
        ("Mr. Smith met Dr. Jones at St. Paul's. They talked.", ["Mr. Smith met Dr. Jones at St. Paul's.", "They talked."]),
        ("Use fruit, e.g. Apples, i.e. Red ones. Fine.", ["Use fruit, e.g. Apples, i.e. Red ones.", "Fine."]),
        ("Pens, pencils, etc. Were sold. Then", ["Pens, pencils, etc. Were sold.", "Then"]),
        ("The U.S. Army won. It was 1945.", ["The U.S. Army won.", "It was 1945."]),
        ("Born Jan. 5 in No. 10. Red vs. Blue. Fine.", ["Born Jan. 5 in No. 10.", "Red vs. Blue.", "Fine."]),
        ("He said no. Then he left.", ["He said no.", "Then he left."]),  # "No." only before a number
        ("Pi is 3.14 or so. It is irrational.", ["Pi is 3.14 or so.", "It is irrational."]),
        ("J. R. R. Tolkien wrote it. H. gammarus is blue.", ["J. R. R. Tolkien wrote it.", "H. gammarus is blue."]),
        ("Wait... What? Well... maybe. It rained\u2026 Then sun.", ["Wait...", "What?", "Well... maybe.", "It rained\u2026", "Then sun."]),
        ('He said "Stop." Then he ran.', ['He said "Stop."', "Then he ran."]),
        ("(This is it.) Next one. [Done.] \u201cQuoted.\u201d Last.", ["(This is it.)", "Next one.", "[Done.]", "\u201cQuoted.\u201d", "Last."]),
        ("It ended. \u201cWhy?\u201d she asked.", ["It ended.", "\u201cWhy?\u201d she asked."]),
        ("He won in 1990. 25 people came.", ["He won in 1990.", "25 people came."]),
        ("a lowercase start. and no split here.", ["a lowercase start. and no split here."]),
        ("Heading\nFirst line without stop\n\n  Second. Third.  \n", ["Heading", "First line without stop", "Second.", "Third."]),
        ("", []),
    ],
)
def test_rules(text, expected):
    assert split_sentences(text) == expected


def test_statistics_on_real_wikipedia(shared_data):
    docs = read_documents([str(shared_data / "wikipedia-en/train.txt")])[:200]
    sentences = [s for d in docs for s in split_sentences(d)]
    n = len(sentences)
    assert n > 5000
    assert all(s and s == s.strip() for s in sentences)
    last_words = [s.split()[-1].lstrip("(\"'").lower() for s in sentences]
    # "etc." legitimately ends many sentences ("..., etc.") and is not followed by anything there.
    ends_abbrev = sum(w.endswith(".") and w[:-1] in ABBREVIATIONS - {"etc"} for w in last_words)
    assert ends_abbrev / n < 0.002
    assert sum(s[0].islower() for s in sentences) / n < 0.02
    assert 10 <= sum(len(s.split()) for s in sentences) / n <= 40
    # Sentences never run across a paragraph line.
    assert sum(s.count("\n") for s in sentences) == 0
