"""memcached's UDP framing: the 8-byte frame header, and replies cut into datagrams.

Sans-IO: bytes in, bytes out; the server layer does the ``recvfrom``/``sendto``. Every datagram
starts with four big-endian 16-bit fields: request id, sequence number, total datagrams,
reserved (0). A request must fit one datagram: memcached (1.6.18) drops a datagram of 8 bytes or
less and one whose header says it is one of several (total != 1), without a reply, and ignores
the sequence and reserved fields. Each reply *response* (one per command, and one per key of a
multi-key get) goes out in datagrams of at most ``UDP_MAX_PAYLOAD`` bytes, header included, each
carrying the request id, its sequence number within that response and the response's total.
"""

from __future__ import annotations

import struct

__all__ = [
    "UDP_HEADER_SIZE",
    "UDP_MAX_PAYLOAD",
    "UDP_DATA_SIZE",
    "UDP_READ_SIZE",
    "parse_request",
    "frame_replies",
]

UDP_HEADER_SIZE = 8
UDP_MAX_PAYLOAD = 1400  # memcached's UDP_MAX_PAYLOAD_SIZE: a datagram, header included
UDP_DATA_SIZE = UDP_MAX_PAYLOAD - UDP_HEADER_SIZE  # reply bytes per datagram
UDP_READ_SIZE = 65536  # memcached's UDP_READ_BUFFER_SIZE: the largest request it reads
_TOTAL_MAX = 0xFFFF  # the total field is 16 bits: memcached clamps rather than refuses

_HEADER = struct.Struct(">HHHH")


def parse_request(datagram: bytes) -> tuple[int, bytes] | None:
    """(request id, request bytes) of one datagram, or None when memcached drops it unanswered:
    nothing after the header, or a header that announces a multi-datagram request."""
    if len(datagram) <= UDP_HEADER_SIZE:
        return None
    request_id, _sequence, total, _reserved = _HEADER.unpack_from(datagram)
    if total != 1:
        return None
    return request_id, datagram[UDP_HEADER_SIZE:]


def frame_replies(
    request_id: int, out: bytes | bytearray, marks: list[int], continuing: bool = False
) -> list[bytes]:
    """The datagrams memcached sends for the responses ``out[marks[i]:marks[i + 1]]``.

    An empty response at the head of what is left to send still goes out, as a bare header with
    a total of 0 (memcached sends a response object it started even when nothing was written
    into it: a get whose first key missed, ``quit``); empty responses right after one that was
    sent are finished without a datagram, as memcached's transmit bookkeeping finishes them.
    Responses with nothing to say at all (noreply, quiet meta commands) leave no mark.
    ``continuing``: these responses directly follow ones already sent in the same transmit,
    so empty ones at the head are finished too.
    """
    datagrams: list[bytes] = []
    view = memoryview(out)
    n = len(marks) - 1
    i = 0
    if continuing:
        while i < n and marks[i + 1] == marks[i]:
            i += 1
    while i < n:
        start, end = marks[i], marks[i + 1]
        size = end - start
        total = min(-(-size // UDP_DATA_SIZE), _TOTAL_MAX)
        if size == 0:
            datagrams.append(_HEADER.pack(request_id, 0, 0, 0))
        for seq, pos in enumerate(range(start, end, UDP_DATA_SIZE)):
            head = _HEADER.pack(request_id, seq & 0xFFFF, total, 0)
            datagrams.append(head + view[pos : min(pos + UDP_DATA_SIZE, end)])
        i += 1
        while i < n and marks[i + 1] == marks[i]:
            i += 1
    return datagrams
