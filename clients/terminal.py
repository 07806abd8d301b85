"""Text from Kafka records made safe for an operator's terminal.

Ids, keys and error messages come from whoever can write to a topic. Printed as received,
an escape sequence in them could recolour, rewrite or hide lines on the operator's terminal
(or set its title, or in some terminals do worse). ``printable`` shows every control or
format character as a visible escape instead: ``ESC`` as ``\\x1b``, a right-to-left override
as ``\\u202e``.
"""

from __future__ import annotations

import unicodedata

# Unicode general categories that do not print as themselves: controls (C0, DEL, C1),
# format characters (bidi overrides, zero-width joiners), surrogates, private use, unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every non-printing character (newline and tab included) escaped."""
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(
        _escape(char) if unicodedata.category(char) in _HIDDEN_CATEGORIES else char for char in text
    )
