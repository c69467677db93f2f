"""MAC addresses and interface names of a network description (no dependency on containers/,
which reads descriptions: data flows from the description to the container configs)."""

from __future__ import annotations

import hashlib
import re
from typing import Optional

IFNAMSIZ = 15  # the kernel's limit on interface names, without the NUL
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def stable_mac(seed: str) -> str:
    """A locally administered unicast MAC that depends only on `seed` (a description and a name):
    bringing a network up again never changes an ARP entry or a DHCP lease."""
    octets = bytearray(hashlib.sha256(f"lxembed-net:{seed}".encode()).digest()[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def check_mac(mac: str) -> Optional[str]:
    """Why `mac` cannot be an interface address, or None when it can."""
    if not isinstance(mac, str) or not _MAC.match(mac):
        return f"{mac!r} is not a MAC address (six hex octets: 02:00:00:00:00:01)"
    first = int(mac[:2], 16)
    if first & 0x01:
        return (f"{mac} is a multicast MAC (lowest bit of the first octet set); use e.g. "
                f"{first & 0xFE:02x}{mac[2:]}")
    if mac.replace(":", "") == "000000000000":
        return f"{mac} is the all-zero MAC"
    return None
