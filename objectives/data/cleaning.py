"""Text cleaning rules and the normalised form duplicates and leaks are found in.

Each rule is a function of one text; ``Cleaner`` applies the rules a space switches on, in
order, and counts what each changed. Characters a label uses and the space's ``keep`` set are
never removed; CJK characters are letters (Unicode category Lo) and no rule removes letters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from objectives.data.section import CleanSection

# Invisible characters that carry meaning: zero-width non-joiner and joiner (Persian, Indic
# scripts, emoji sequences).
_JOINERS = {"\u200c", "\u200d"}
_CONTROL = {"Cc", "Cf", "Co", "Cs", "Cn"}
_SYMBOLS = {"So", "Sk"}  # emoji, dingbats, (R), TM, modifier marks; not currency or math
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines
_EMPTY_LINES = re.compile(r"\n{3,}")


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _remover(categories: set[str], keep: set[str]) -> Callable[[str], str]:
    def remove(text: str) -> str:
        return "".join(c for c in text if c in keep or c in "\n\t" or c in _JOINERS
                       or unicodedata.category(c) not in categories)
    return remove


def collapse_whitespace(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _EMPTY_LINES.sub("\n\n", "\n".join(lines)).strip()


def normalized(text: str) -> str:
    """The form two texts are the same in: NFKC, case folded, punctuation and symbols out,
    whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in folded)
    return " ".join(kept.split())


class Cleaner:
    """The switched-on rules, applied in order to each text; ``changed`` counts per rule."""

    def __init__(self, section: CleanSection, keep: set[str]) -> None:
        keep = keep | set(section.keep)
        rules: list[tuple[str, Callable[[str], str]]] = []
        if section.nfkc:
            rules.append(("nfkc", nfkc))
        if section.strip_control:
            rules.append(("strip_control", _remover(_CONTROL, keep)))
        if section.strip_symbols:
            rules.append(("strip_symbols", _remover(_SYMBOLS, keep)))
        if section.collapse_whitespace:
            rules.append(("collapse_whitespace", collapse_whitespace))
        self.rules = rules

    def __call__(self, text: str, record: Callable[[str, str, str], None]) -> str:
        """``text`` cleaned; ``record(rule, before, after)`` for each rule that changed it."""
        for name, rule in self.rules:
            after = rule(text)
            if after != text:
                record(name, text, after)
                text = after
        return text
