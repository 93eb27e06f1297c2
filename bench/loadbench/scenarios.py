"""The scenarios: which corpus, how many associations, plain or TLS, against whom.

A scenario is named by a key: N (CT, N associations), smallN (small objects), tlsN (CT
over TLS), or big (one instance of --big-mb MiB). One association is compared with
DCMTK's dcmrecv, which serves one at a time; more with storescp --fork, which serves
them at once; big with dcmrecv +B, which streams to disk as dcmrecvd does. A suffix
@dcmrecv or @storescp picks the other (issue 7 compared 4 associations with dcmrecv).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .receivers import DCMRECV, DCMRECV_BIT_PRESERVING, STORESCP, Receiver

DEFAULT = "1,4,16,64,small1,tls1,tls16"
_KEY = re.compile(
    r"(?:(?P<prefix>tls|small)?(?P<associations>[1-9][0-9]*)|big)(?:@(?P<against>dcmrecv|storescp))?"
)


@dataclass(frozen=True)
class Scenario:
    key: str
    kind: str
    associations: int
    tls: bool
    reference: Receiver

    @property
    def probe(self) -> bool:
        """Whether latency is probed: not for one big instance, whose pool would be as big."""
        return self.kind != "big"

    def title(self, count: int, total_bytes: int) -> str:
        if self.kind == "big":
            what = f"Enhanced CT {total_bytes / 2**20:.0f} MiB"
        else:
            what = f"{'CT' if self.kind == 'ct' else 'small'} x{count}"
        plural = "s" if self.associations > 1 else ""
        tls = ", TLS" if self.tls else ""
        return f"{what}, {self.associations} assoc{plural}{tls}"


def scenario(key: str) -> Scenario:
    key = key.strip()
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError(
            f"unknown scenario {key!r}: N, smallN, tlsN or big, optionally @dcmrecv or @storescp"
        )
    big = match["associations"] is None
    associations = 1 if big else int(match["associations"])
    if match["against"] == "storescp":
        reference = STORESCP
    elif match["against"] == "dcmrecv" or associations == 1:
        reference = DCMRECV_BIT_PRESERVING if big else DCMRECV
    else:
        reference = STORESCP
    kind = "big" if big else "small" if match["prefix"] == "small" else "ct"
    return Scenario(key, kind, associations, match["prefix"] == "tls", reference)


def parse(keys: str) -> list[Scenario]:
    """Scenarios from a comma-separated list of keys, in that order, each once."""
    return [scenario(key) for key in dict.fromkeys(k.strip() for k in keys.split(",") if k.strip())]
