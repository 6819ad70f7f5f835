"""Text a client may send: what every free-text field of every command accepts.

PostgreSQL text cannot hold NUL, a log line or a terminal should not get control characters,
and a read model should not get megabytes of a name: so every text field is printable (no C0
or C1 control characters, DEL or NUL; pydantic refuses unpaired surrogates itself) and bounded.
The pattern is in the contract, so clients see the rule; a violation is a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
VISIBLE_ASCII = r"^[\x21-\x7e]+$"  # keys and tokens: what the ledger and the logs take as is


def text(max_length: int, *, min_length: int = 0, default: Any = ..., **more: Any) -> Any:
    """A ``Field`` for free text: printable, ``min_length`` to ``max_length`` characters."""
    return Field(default, min_length=min_length, max_length=max_length, pattern=PRINTABLE, **more)
