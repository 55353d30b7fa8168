"""Cleaning rules and the normalised form, on texts chosen by hand."""

from __future__ import annotations

from objectives.data.cleaning import Cleaner, collapse_whitespace, nfkc, normalized
from objectives.data.section import CleanSection


def clean(text: str, keep: set[str] = frozenset(), **rules) -> tuple[str, list[str]]:
    changed: list[str] = []
    out = Cleaner(CleanSection(**rules), set(keep))(text, lambda rule, *_: changed.append(rule))
    return out, changed


def test_full_width_becomes_half_width():
    assert nfkc("ＡＢＣ１２３！") == "ABC123!"
    assert nfkc("ﬁnance") == "finance"


def test_control_characters_go_but_newlines_tabs_and_joiners_stay():
    text = "a\x00b\u200bc\nd\te\u200cf\ufeff"
    assert clean(text) == ("abc\nd e\u200cf", ["strip_control", "collapse_whitespace"])


def test_symbols_go_only_when_asked_and_never_cjk_currency_math_or_label_characters():
    text = "利润增长 😀 $5 + €3 ★ ®"
    assert clean(text)[0] == text
    assert clean(text, strip_symbols=True)[0] == "利润增长 $5 + €3"
    assert clean(text, keep={"★"}, strip_symbols=True)[0] == "利润增长 $5 + €3 ★"
    assert clean("good 👍", strip_symbols=True, keep="👍")[0] == "good 👍"


def test_whitespace_collapses_within_lines_and_keeps_one_empty_line():
    assert collapse_whitespace("  a \t b  \n\n\n\n c  ") == "a b\n\nc"
    assert collapse_whitespace("a\u3000b") == "a b"  # the ideographic space


def test_rules_can_be_switched_off():
    assert clean("ＡＢ  c", nfkc=False, collapse_whitespace=False) == ("ＡＢ  c", [])


def test_the_normalised_form_ignores_width_case_spacing_and_punctuation():
    assert normalized("ＡＣＭＥ  Profits, RISE!") == normalized("acme profits rise") \
        == "acme profits rise"
    assert normalized("利润，增长。") == "利润 增长"
