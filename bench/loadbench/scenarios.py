"""The scenarios: which corpus, how many associations, plain or TLS, against whom.

A scenario is named by a key: N (CT, N associations), smallN (small objects), tlsN (CT
over TLS), or big (one instance of --big-mb MiB). One association is compared with
DCMTK's dcmrecv, which serves one at a time; more with storescp --fork, which serves
them at once; big with dcmrecv +B, which streams to disk as dcmrecvd does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .receivers import DCMRECV, DCMRECV_BIT_PRESERVING, STORESCP, Receiver

DEFAULT = "1,4,16,64,small1,tls1,tls16"
_KEY = re.compile(r"(?P<prefix>tls|small)?(?P<associations>[1-9][0-9]*)|big")


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

    def title(self, count: int) -> str:
        what = {"ct": f"CT x{count}", "small": f"small x{count}", "big": "1 big instance"}
        plural = "s" if self.associations > 1 else ""
        tls = ", TLS" if self.tls else ""
        return f"{what[self.kind]}, {self.associations} assoc{plural}{tls}"


def scenario(key: str) -> Scenario:
    match = _KEY.fullmatch(key.strip())
    if match is None:
        raise ValueError(f"unknown scenario {key!r}: N, smallN, tlsN or big")
    if key.strip() == "big":
        return Scenario("big", "big", 1, False, DCMRECV_BIT_PRESERVING)
    associations = int(match["associations"])
    prefix = match["prefix"]
    reference = DCMRECV if associations == 1 else STORESCP
    return Scenario(
        key.strip(),
        "small" if prefix == "small" else "ct",
        associations,
        prefix == "tls",
        reference,
    )


def parse(keys: str) -> list[Scenario]:
    """Scenarios from a comma-separated list of keys, in that order, each once."""
    return [scenario(key) for key in dict.fromkeys(k.strip() for k in keys.split(",") if k.strip())]
