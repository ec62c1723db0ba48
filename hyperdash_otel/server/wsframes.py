"""The few WebSocket frames a dashboard client sends, parsed from bytes (RFC 6455 section 5).

The stream is one-way: a client sends pongs, a close, now and then a ping, and perhaps
text the server ignores. :class:`FrameParser` turns the bytes read from a connection
into those messages, with Tornado's rules (a message larger than the limit ends the
connection with 1009; reserved bits, a fragmented or long control frame, a continuation
with nothing to continue, an unknown opcode, text that is not UTF-8 end it too) and
nothing else: it touches no socket, so tests feed it bytes directly.

No extension is negotiated, so every reserved bit must be 0. Client frames should be
masked; like Tornado, the parser also takes unmasked ones.
"""

from __future__ import annotations

__all__ = [
    "CLOSE",
    "PING",
    "PONG",
    "TEXT",
    "BINARY",
    "FrameError",
    "FrameParser",
    "unmask",
]

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_CONTINUATION = 0x0
_KNOWN = frozenset((_CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG))

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009


class FrameError(Exception):
    """The peer broke the protocol: close with ``code`` and ``reason``, then cut."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def unmask(mask: bytes, data: bytes) -> bytes:
    """``data`` XORed with the repeated four-byte ``mask`` (RFC 6455 section 5.3).

    >>> unmask(b"\\x01\\x02\\x03\\x04", unmask(b"\\x01\\x02\\x03\\x04", b"hello"))
    b'hello'
    """
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class FrameParser:
    """Complete messages out of a connection's bytes, in order.

    ``feed(data)`` returns the ``(opcode, payload)`` of each message completed by
    ``data``: text, binary (fragments joined), close, ping, pong (control frames may come
    between fragments). Bytes of an unfinished frame wait for the next ``feed``. Raises
    :class:`FrameError` when the peer breaks the protocol; the connection is then done.

    A connection makes one only when its client first sends something, and it holds at
    most one frame's header and ``max_message`` bytes of payload.

    >>> FrameParser(4096).feed(b"\\x8a\\x80\\x00\\x00\\x00\\x00")
    [(10, b'')]
    """

    __slots__ = ("_fragments", "_kind", "_pending", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._pending = b""
        self._fragments: bytearray | None = None
        self._kind = 0
        """The opcode of the fragmented message being joined."""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._pending + data if self._pending else data
        out: list[tuple[int, bytes]] = []
        at = 0
        end = len(buf)
        while end - at >= 2:
            first, second = buf[at], buf[at + 1]
            if first & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            opcode = first & 0x0F
            final = first & 0x80
            size = second & 0x7F
            head = 2
            if opcode & 0x8 and size >= 126:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "control frame too long")
            if size == 126:
                if end - at < 4:
                    break
                size = int.from_bytes(buf[at + 2:at + 4], "big")
                head = 4
            elif size == 127:
                if end - at < 10:
                    break
                size = int.from_bytes(buf[at + 2:at + 10], "big")
                head = 10
            if opcode not in _KNOWN:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "unknown opcode")
            # Refused from the header, before its payload is read: as Tornado does.
            joined = size + (len(self._fragments) if self._fragments is not None
                             and not opcode & 0x8 else 0)
            if joined > self.max_message:
                raise FrameError(CLOSE_MESSAGE_TOO_BIG, "message too big")
            masked = second & 0x80
            start = at + head + (4 if masked else 0)
            if end - start < size:
                break
            payload = buf[start:start + size]
            if masked:
                payload = unmask(buf[at + head:start], payload)
            at = start + size
            message = self._frame(opcode, bool(final), payload)
            if message is not None:
                out.append(message)
        self._pending = buf[at:] if at < end else b""
        return out

    def _frame(self, opcode: int, final: bool, payload: bytes) -> tuple[int, bytes] | None:
        if opcode & 0x8:  # control frames may come between a message's fragments
            if not final:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            return opcode, payload
        fragments = self._fragments
        if opcode == _CONTINUATION:
            if fragments is None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "nothing to continue")
            fragments += payload
            if not final:
                return None
            self._fragments = None
            opcode, payload = self._kind, bytes(fragments)
        elif fragments is not None:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        elif not final:
            self._kind = opcode
            self._fragments = bytearray(payload)
            return None
        if opcode == TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(CLOSE_INVALID_DATA, "text is not UTF-8") from None
        return opcode, payload
