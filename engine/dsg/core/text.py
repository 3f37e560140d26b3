"""Text from another person made safe to store: no terminal control sequences, no
bidirectional overrides (core.paths.show_text escapes what is printed)."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls; bidi embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Whole terminal sequences: CSI (ESC [ ... final) and OSC (ESC ] ... BEL or ESC \\).
_SEQUENCE = re.compile("\x1b\\[[0-?]*[ -/]*[@-~]|\x1b\\][^\x07\x1b]*(?:\x07|\x1b\\\\)?")


def clean_text(text: str) -> str:
    """`text` with control characters (escape sequences' ESC among them) and bidi overrides
    removed; tabs and newlines kept. What the agent stores of a client's words."""
    return _UNSAFE.sub("", _SEQUENCE.sub("", text))
