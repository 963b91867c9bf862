"""Rule-based English sentence splitter (no downloads): good enough to build NSP/SOP segments."""
from __future__ import annotations

import re

# Words that end in "." without ending the sentence (compared lower-cased, without the final ".").
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof rev gen col maj capt cmdr lt sgt cpl adm brig gov sen rep hon st jr sr mt ft "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "approx ca cf vs etc al e.g i.e a.m p.m u.s u.k".split()
)
# These only abbreviate before a number ("No. 5", "pp. 12"); "He said no. Then" still splits.
NUMBER_ABBREVIATIONS = frozenset("no nos vol vols pp ch fig figs eq".split())
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace, then
# something that can start a sentence (optional opening quote/bracket, then an upper-case letter
# or a digit). Group 1 is the word the punctuation is attached to.
_CANDIDATE = re.compile(
    r"""(?<!\S)(\S*?)([.!?\u2026]+)["'\u201d\u2019\u00bb)\]]*\s+(?=["'\u201c\u2018\u00ab(\[]*[A-Z0-9])"""
)
_DOTTED = re.compile(r"(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}")
_OPENERS = "\"'\u201c\u2018\u00ab([{"


def _ends_sentence(word: str, punct: str, next_char: str) -> bool:
    if punct != ".":  # "?", "!", "..." and "…" end a sentence when a capitalised word follows
        return True
    word = word.lstrip(_OPENERS)
    if len(word) == 1 and word.isalpha():  # initials: J. R. R. Tolkien, H. gammarus
        return False
    # Abbreviations, including dotted ones (U.S., e.g., Ph.D.) not in the list.
    word = word.lower()
    if word in ABBREVIATIONS or (word in NUMBER_ABBREVIATIONS and next_char.isdigit()):
        return False
    return not _DOTTED.fullmatch(word)


def split_sentences(text: str) -> list[str]:
    """Split text into sentences; every line break is a boundary too. Returns stripped, non-empty strings."""
    sentences: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in _CANDIDATE.finditer(line):
            if _ends_sentence(m.group(1), m.group(2), line[m.end()]):
                sentences.append(line[start : m.end()].strip())
                start = m.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]
