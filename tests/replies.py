"""Where a memcached text-protocol reply ends, so test reads stop at a known end marker.

Why: a read that stops after a short quiet period splits a reply in two when a loaded machine
stalls the server mid-reply. A reply here is complete when it ends on a line that closes a
reply: not inside a data block, and not on a line that promises more (a ``VALUE`` item, ``STAT``,
``ITEM``, ``CONFIG`` or metadump ``key=`` line, which a closing ``END`` follows; a meta ``VA``
reply ends with its data). Readers keep waiting, up to their long deadline, while it is not.
"""

from __future__ import annotations

import re

CRLF = b"\r\n"
_DATA_HEADER = re.compile(rb"^(?:VALUE \S+ \d+ (\d+)(?: \d+)?|VA (\d+)(?: .*)?)$")
_CONTINUED = (b"STAT ", b"ITEM ", b"CONFIG ", b"key=")


def reply_complete(buf: bytes) -> bool:
    """True when ``buf`` ends exactly at the end of a reply (see the module docstring)."""
    if not buf.endswith(CRLF):
        return False
    pos, last = 0, b""
    while pos < len(buf):
        end = buf.find(CRLF, pos)
        if end < 0:
            return False
        line = buf[pos:end]
        pos = end + 2
        m = _DATA_HEADER.match(line)
        if m:
            size = int(m.group(1) or m.group(2))
            if len(buf) < pos + size + 2:
                return False  # the data block has not all arrived
            pos += size + 2
            # a meta VA reply ends with its data; VALUE lines are followed by END
            last = b"VA" if m.group(2) is not None else line
            continue
        last = line
    return not (last.startswith(b"VALUE ") or last.startswith(_CONTINUED))
