"""CRM text made safe to show: titles come from public web forms, so they are data, never the server speaking.

Pure functions, one per place text goes:

- `for_display(text, limit)`: one line of plain, visible text for a person or the assistant (messages, elicitation
  prompts). Controls and line breaks become spaces, invisible and bidirectional characters go, whitespace runs
  collapse, the length is capped with `…`, and markdown/HTML cannot take effect.
- `quoted(text, limit)`: the same in «guillemets» that the text itself cannot close.
- `for_terminal(text, limit=None)`: for `b24-mcp journal`: every control, format and separator character is shown
  as a backslash escape (`\\x1b`, `\\n`, `\\u202e`), so a title cannot rewrite the screen or forge table rows.
- `bounded(text, limit)`: a true value kept as is in a structured result (a JSON string is data), only capped.
- `safe_json(value)`: compact JSON whose strings escape exactly the characters `for_terminal` escapes, so a journal
  line or `--json` output prints safely and always encodes as UTF-8.

The markdown rule of `for_display`: each of ``\\ ` * _ [ ] < > & ~ |`` is preceded by a backslash; nothing else
changes. That stops links and images (`[`), emphasis (`*`, `_`, `~`), code spans (backtick), HTML tags and
entities (`<`, `>`, `&`, e.g. `&#x202E;`), table cells (`|`) and escapes of our own (backslash), and reads
plainly where markdown is not rendered. Autolinks (`https://…`) stay: they show their real target.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import cache
from itertools import compress

ELLIPSIS = "…"
# Zero-width or blank letters and marks that are not in category Cf but show nothing (Hangul fillers, the
# combining grapheme joiner, Khmer inherent vowels).
_INVISIBLE_LETTERS = "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0"
# Variation selectors: one after a character picks its glyph (U+2139 U+FE0F, emoji i); a run only hides data.
_SELECTORS = r"\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef"
# Marks kept on one character: enough for any script's stacked diacritics, not enough to smear over lines.
_MAX_MARKS = 4
_MARKDOWN = re.compile(r"([\\`*_\[\]<>&~|])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"[\s\u2800]+")  # `\s` is every character `str.isspace` accepts (Unicode White_Space)
_SELECTOR_RUNS = re.compile(f"([{_SELECTORS}])[{_SELECTORS}]+")


def for_display(text: str, limit: int = 100) -> str:
    """`text` as one line of plain visible text of at most `limit` characters (then ending in `…`).

    C0/C1 controls other than whitespace, category Cf (bidirectional controls U+202A-U+202E, U+2066-U+2069,
    U+200E/U+200F, U+061C; zero-width U+200B-U+200D, U+2060, U+FEFF, U+180E; tag characters U+E0000-U+E007F) and
    blank letters (U+3164, …) are removed; line breaks, tabs and every Unicode space become one space per run; a
    lone surrogate becomes U+FFFD; a run of variation selectors keeps its first, combining marks on one character
    keep their first four. `limit` counts characters before the markdown escapes (see the module docstring).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    # Clean a growing prefix, so a megabyte of text costs what its first few hundred characters cost.
    window = max(4 * limit, 256)
    while True:
        clean = _clean(text[:window])
        if window >= len(text) or len(clean) > limit + 1:
            break
        window *= 4
    clean = clean.strip(" ")
    if len(clean) > limit:
        clean = clean[: limit - 1].rstrip(" ") + ELLIPSIS
    return _MARKDOWN.sub(r"\\\1", clean)


def quoted(text: str, limit: int = 100) -> str:
    """`for_display(text, limit)` in «guillemets»; a « or » inside becomes the single guillemet U+2039 or U+203A,
    so the text cannot close the quote early."""
    return "«" + for_display(text, limit).replace("«", "\u2039").replace("»", "\u203a") + "»"


def for_terminal(text: str, limit: int | None = None) -> str:
    """`text` with every control, format, line/paragraph separator and lone surrogate escaped, and `\\` doubled.

    Escapes read like Python's: `\\n`, `\\r`, `\\t`, `\\x1b` (C0, DEL, C1), `\\u202e`, `\\U000e0041`; everything
    else, spaces included, is kept. With `limit`, the result has at most `limit` characters: it is cut before an
    escape, never inside one, and ends in `…`.
    """
    if limit is None:
        return _terminal_unsafe().sub(lambda match: _escape(match.group()), text)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    unsafe = _terminal_unsafe()
    pieces = [_escape(char) if unsafe.match(char) else char for char in text[: limit + 1]]
    if len(text) <= limit and sum(len(piece) for piece in pieces) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > limit - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + ELLIPSIS


def bounded(text: str, limit: int = 2000) -> str:
    """`text` unchanged when it has at most `limit` characters, else its first `limit - 1` and `…`.

    For values kept in structured results: a JSON string is data, so nothing is escaped or removed.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def safe_json(value: object) -> str:
    """Compact JSON of `value` (non-ASCII kept readable) with every character `for_terminal` would escape written as
    a `\\uXXXX` escape: the same data for any JSON reader, and safe to print or to encode as UTF-8."""
    dumped = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # These characters occur only inside JSON strings, where a \\u escape means the same character.
    return _terminal_unsafe(with_backslash=False).sub(lambda match: _json_escape(match.group()), dumped)


def _clean(text: str) -> str:
    text = _SURROGATE.sub("\ufffd", text)
    text = _invisible().sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SELECTOR_RUNS.sub(r"\1", text)
    return _mark_runs().sub(r"\1", text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in "\\\n\r\t":
        return {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# Every format character (Cf) and non-spacing or enclosing mark (Mn, Me) lives in these planes.
_PLANES = (range(0x20000), range(0xE0000, 0xE1000))
_HIDDEN_CATEGORIES = ("Cf", "Mn", "Me")


@cache
def _hidden_code_points() -> dict[str, list[int]]:
    """The code points of each of `_HIDDEN_CATEGORIES`, found in one pass (the first text shown pays for it once)."""
    found: dict[str, list[int]] = {category: [] for category in _HIDDEN_CATEGORIES}
    for plane in _PLANES:
        categories = list(map(unicodedata.category, map(chr, plane)))
        for code in compress(plane, map(found.__contains__, categories)):
            found[categories[code - plane.start]].append(code)
    return found


@cache
def _ranges(categories: frozenset[str]) -> str:
    """A regex class body of the code points in `categories` (some of `_HIDDEN_CATEGORIES`)."""
    found = _hidden_code_points()
    spans: list[tuple[int, int]] = []
    for code in sorted(code for category in categories for code in found[category]):
        if spans and spans[-1][1] == code - 1:
            spans[-1] = (spans[-1][0], code)
        else:
            spans.append((code, code))
    return "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in spans)


@cache
def _invisible() -> re.Pattern[str]:
    controls = r"\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"  # C0, DEL and C1 except those that are whitespace
    return re.compile(f"[{controls}{_ranges(frozenset({'Cf'}))}{_INVISIBLE_LETTERS}]+")


@cache
def _mark_runs() -> re.Pattern[str]:
    marks = _ranges(frozenset({"Mn", "Me"}))
    return re.compile(f"((?:[{marks}]){{{_MAX_MARKS}}})[{marks}]+")


@cache
def _terminal_unsafe(*, with_backslash: bool = True) -> re.Pattern[str]:
    backslash = r"\\" if with_backslash else ""
    return re.compile(f"[{backslash}\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\ud800-\udfff{_ranges(frozenset({'Cf'}))}]")
