"""Records of a JSON export, read as a stream: memory stays bounded whatever the file's size.

Two layouts are read, gzip-compressed or not (told apart by the gzip magic bytes):

- one top-level array of records, ``[{...}, {...}]`` (what Cartography's Spacelift EC2
  ownership sync reads);
- records one after another, one per line (JSON Lines: what Athena's ``UNLOAD ... WITH
  (format = 'JSON')`` writes, gzip-compressed by default).

Why not a streaming parser library (ijson): it bounds nothing per record (one huge string is
buffered whole by its C backend) and is slow without that backend. Here the standard
library's C decoder (``json.JSONDecoder.raw_decode``) parses each record from a window of at
most ``max_record`` characters past the chunk being read, so memory is ``chunk + max_record``
and decoding runs at C speed. A record that does not fit the window, or nests deeper than the
interpreter allows, is skipped with a structural scan that keeps nothing (``Skipped``); a
syntax error skips that record and reading goes on after it.
"""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

CHUNK = 256 * 1024  # characters (and decompressed bytes) handed on at a time
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()
# Outside strings: the characters that change depth or start a string. Inside: its end.
_STRUCTURAL = re.compile(r'["\[\]{}]')
_IN_STRING = re.compile(r'["\\]')
_LINE_END = re.compile(r"\n")
_SEPARATOR = re.compile(r"[,\]\n]")


class UnreadableExport(Exception):
    """The file cannot be read on from here (not JSON, bad gzip or UTF-8, cut short)."""


@dataclass(frozen=True)
class Skipped:
    """A record left out: ``malformed`` (not JSON), ``too_large`` or ``too_deep``."""

    reason: str


def records(
    chunks: Iterable[bytes], *, max_record: int, chunk: int = CHUNK
) -> Iterator[Any | Skipped]:
    """Each record of the export (any JSON value), or ``Skipped`` for one that was left out.

    Raises ``UnreadableExport`` for a file that cannot be read on; what was yielded before
    stands.
    """
    return _Reader(_text(chunks, chunk), max_record).run()


def _text(chunks: Iterable[bytes], chunk: int) -> Iterator[str]:
    """UTF-8 text of the (possibly gzip-compressed) byte stream, in pieces of bounded size."""
    it = iter(chunks)
    first = b""
    for piece in it:  # the first non-empty piece tells whether the file is compressed
        if piece:
            first = piece
            break
    if not first:
        return
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        if first[:2] == b"\x1f\x8b":
            for raw in _gunzip(first, it, chunk):
                yield decoder.decode(raw)
        else:
            yield decoder.decode(first)
            for piece in it:
                yield decoder.decode(piece)
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise UnreadableExport(f"not UTF-8 text ({exc.reason})") from None


def _gunzip(first: bytes, rest: Iterator[bytes], chunk: int) -> Iterator[bytes]:
    # max_length bounds each output piece: a small compressed chunk may expand a thousandfold.
    z = zlib.decompressobj(wbits=31)
    piece: bytes | None = first
    while True:
        data = piece if piece is not None else b""
        try:
            while True:
                out = z.decompress(data, chunk)
                if out:
                    yield out
                data = z.unconsumed_tail
                if not data:
                    break
            if z.eof:
                if z.unused_data.strip(b"\x00"):
                    # Concatenated gzip members (gzip -c a b > c): go on with the next one.
                    tail = z.unused_data
                    z = zlib.decompressobj(wbits=31)
                    piece = tail
                    continue
                return
        except zlib.error as exc:
            raise UnreadableExport(f"not valid gzip ({exc})") from None
        piece = next(rest, None)
        if piece is None:
            if not z.eof:
                raise UnreadableExport("gzip stream cut short")
            return


class _Reader:
    def __init__(self, text: Iterator[str], max_record: int) -> None:
        self._text = text
        self._max = max_record
        self._lines_mode = False
        self.buf = ""
        self.pos = 0
        self.eof = False

    # -- buffer --------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Append the next piece (dropping what was consumed); False at the end of input."""
        if self.eof:
            return False
        piece = next(self._text, None)
        if piece is None:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + piece
        self.pos = 0
        return True

    def _skip_ws(self) -> str | None:
        """The next non-blank character (not consumed), or None at the end of input."""
        while True:
            n = len(self.buf)
            while self.pos < n and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < n:
                return self.buf[self.pos]
            if not self._fill():
                return None

    # -- layouts ---------------------------------------------------------------------------

    def run(self) -> Iterator[Any | Skipped]:
        first = self._skip_ws()
        if first is None:
            return
        if first == "[":
            self.pos += 1
            yield from self._array()
        elif first == "{":
            self._lines_mode = True
            yield from self._lines()
        else:
            raise UnreadableExport("neither a JSON array nor JSON Lines of records")

    def _array(self) -> Iterator[Any | Skipped]:
        if self._skip_ws() == "]":
            return
        while True:
            if self._skip_ws() is None:
                raise UnreadableExport("cut short: the array is not closed")
            yield self._value()
            c = self._skip_ws()
            if c == ",":
                self.pos += 1
            elif c == "]":
                return
            elif c is None:
                raise UnreadableExport("cut short: the array is not closed")
            else:
                raise UnreadableExport(f"expected ',' or ']' between records, got {c!r}")

    def _lines(self) -> Iterator[Any | Skipped]:
        while self._skip_ws() is not None:
            yield self._value()

    # -- one record ------------------------------------------------------------------------

    def _value(self) -> Any | Skipped:
        while True:
            start = self.pos
            try:
                value, end = _DECODER.raw_decode(self.buf, start)
            except RecursionError:
                return self._skip("too_deep")
            except json.JSONDecodeError:
                # Either the record goes on past the window, or it is broken. Read on while
                # the window may still hold it; then skip it structurally.
                if not self.eof and len(self.buf) - start <= self._max and self._fill():
                    continue
                return self._skip("malformed")
            if end - start > self._max:
                self.pos = end
                return Skipped("too_large")
            self.pos = end
            return value

    def _skip(self, reason: str) -> Skipped:
        """Move past the record starting at ``pos`` without keeping it (bracket matching).

        Within the window the reason given stands; a record found longer than the window is
        ``too_large`` whatever made it fail. A file that ends inside it is cut short.
        """
        depth = 0
        in_string = False
        length = 0
        first = self.buf[self.pos] if self.pos < len(self.buf) else ""
        if self._lines_mode or first not in "[{":
            # One record per line (or a stray scalar in an array): on from the next newline
            # (or separator).
            stop = _LINE_END if self._lines_mode else _SEPARATOR
            m = stop.search(self.buf, self.pos + 1)
            while m is None:
                length += len(self.buf) - self.pos
                self.pos = len(self.buf)
                if not self._fill():
                    return Skipped("too_large" if length > self._max else reason)
                m = stop.search(self.buf, self.pos)
            length += m.start() - self.pos
            self.pos = m.start()
            return Skipped("too_large" if length > self._max else reason)
        while True:
            pattern = _IN_STRING if in_string else _STRUCTURAL
            m = pattern.search(self.buf, self.pos)
            if m is None:
                length += len(self.buf) - self.pos
                self.pos = len(self.buf)
                if not self._fill():
                    raise UnreadableExport("cut short inside a record")
                continue
            ch = m.group()
            length += m.end() - self.pos
            self.pos = m.end()
            if in_string:
                if ch == "\\":
                    if self.pos >= len(self.buf) and not self._fill():
                        raise UnreadableExport("cut short inside a record")
                    self.pos += 1  # the escaped character, whatever it is
                    length += 1
                else:
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return Skipped("too_large" if length > self._max else reason)
