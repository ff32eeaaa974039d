"""Turning generated token ids into answer text: incremental decoding and stop rules.

- :class:`IncrementalDecoder`: ids → text pieces, never splitting a multi-byte character.
- :data:`LineRule` and :func:`repeats_a_line`: a stop rule looks at an answer's lines as they
  complete and may end the answer (a small model's detection answer loops on one box: ``car [161,
  161, 161, 161]`` line after line until the length limit).
- :class:`LineGate`: streams text through a rule, holding each line back until it is complete.

:class:`earthgpt.inference.ChatSession` uses all three; they are plain text code (no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces, holding back incomplete multi-byte characters.

    Each piece is the text that decoding the ids so far adds beyond what was already emitted; a
    piece is emitted only when it does not end in the replacement character U+FFFD (a UTF-8
    sequence split across tokens), so joined pieces equal the decode of all ids.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # ids up to here have been emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add one id; return the new text it completes ('' while a character is still incomplete)."""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    @property
    def text(self) -> str:
        """The decode of every id pushed so far."""
        return self._decode(self.ids)

    def flush(self) -> str:
        """The text of ids still held back (an incomplete character at the very end)."""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return after[len(before) :]


LineRule = Callable[[Sequence[str]], bool]
"""A stop rule: called with the answer's lines so far each time a line is complete (the last one
is the new line); True drops that line and ends the answer."""


def repeats_a_line(lines: Sequence[str]) -> bool:
    """A :data:`LineRule`: the new line (not blank) repeats one the answer already wrote."""
    *earlier, last = lines
    return bool(last.strip()) and last.strip() in {line.strip() for line in earlier}


class LineGate:
    """Streams answer text through a :data:`LineRule`.

    Without a rule, text passes as it comes. With one, text is held back until its line is
    complete, then passed on (with its newline) unless the rule refuses it; a refused line is
    dropped and the gate closes. :attr:`text` is everything passed on, so a streamed answer and
    the recorded one are the same text.
    """

    def __init__(self, rule: LineRule | None) -> None:
        self.rule = rule
        self.lines: list[str] = []
        self.text = ""
        self.refused = False
        self._pending = ""

    def push(self, piece: str) -> str:
        """Add streamed text; return what may be shown now (``""`` while a line is incomplete)."""
        if self.refused:
            return ""
        if self.rule is None:
            self.text += piece
            return piece
        self._pending += piece
        out = ""
        while "\n" in self._pending and not self.refused:
            line, self._pending = self._pending.split("\n", 1)
            out += self._line(line, "\n")
        return out

    def close(self) -> str:
        """The answer ended: the last line (no newline after it) goes through the rule too."""
        rest, self._pending = self._pending, ""
        return self._line(rest, "") if rest and not self.refused else ""

    def _line(self, line: str, end: str) -> str:
        self.lines.append(line)
        if self.rule is not None and self.rule(self.lines):
            self.lines.pop()
            self.refused, self._pending = True, ""
            return ""
        self.text += line + end
        return line + end
