"""Text made safe to show on a terminal.

Values that come from outside, such as a remote error body kept in a reason, may
carry control characters: escape sequences that clear or recolour the terminal,
or carriage returns that hide what comes before them. `printable` writes them as
``\\x1b`` and the like, so the command line and the text log show them instead of
obeying them.
"""

from __future__ import annotations

_CONTROL_CODES = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
_VISIBLE = {code: f"\\x{code:02x}" for code in _CONTROL_CODES if chr(code) not in "\n\t"}


def printable(text: str) -> str:
    """Return ``text`` with its control characters, other than newline and tab, written
    as escapes."""
    return text.translate(_VISIBLE)
