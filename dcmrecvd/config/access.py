"""Who may open an association: per-peer rules, a default policy, association limits.

Pure decisions: `decide` takes the request's calling and called AE titles, the peer's
address and the associations running now, and says accept (with which rule, and so
which profile) or refuse (with the A-ASSOCIATE-RJ result, source and reason, and the
one log line that says which rule refused whom). Rules are tried in file order; the
first whose calling AE title and addresses match the peer decides.
"""

from __future__ import annotations

import enum
import ipaddress
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Rejection(enum.Enum):
    """A-ASSOCIATE-RJ (result, source, reason) per PS3.8 9.3.4, and DCMTK's wording."""

    CALLING_AE_NOT_RECOGNIZED = ((1, 1, 3), "calling AE title not recognized")
    CALLED_AE_NOT_RECOGNIZED = ((1, 1, 7), "called AE title not recognized")
    LOCAL_LIMIT_EXCEEDED = ((2, 3, 2), "local limit exceeded")

    @property
    def rsd(self) -> tuple[int, int, int]:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]


@dataclass(frozen=True)
class PeerRule:
    """One [peer NAME] section; an empty tuple or None means "any"."""

    name: str
    calling_aetitle: str | None = None
    networks: tuple[Network, ...] = ()
    called_aetitles: tuple[str, ...] = ()
    # The profile for this peer's associations; None: the receiver's profile.
    profile: str | None = None
    max_associations: int | None = None

    def matches(self, calling: str, address: str) -> bool:
        if self.calling_aetitle is not None and calling != self.calling_aetitle:
            return False
        return not self.networks or _in(address, self.networks)


@dataclass(frozen=True)
class ProxyPolicy:
    """A listener that requires the PROXY protocol header, and the balancers it takes it
    from; any other peer is refused, since the header lets its sender claim any address."""

    trusted: tuple[Network, ...]
    # The specification asks for at least 3 s; a balancer sends the header at once.
    header_timeout: float = 5.0

    def trusts(self, address: str) -> bool:
        return _in(address, self.trusted)


def ip_of(address: str) -> IPAddress | None:
    """The IP address `address` names, None if it names none; an IPv4-mapped IPv6
    address (what a dual-stack listener sees of an IPv4 peer) is the IPv4 address it
    carries, as rules write it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether `address` is in one of `networks`."""
    ip = ip_of(address)
    return ip is not None and any(ip in network for network in networks)


@dataclass(frozen=True)
class AccessPolicy:
    """The rules and what a peer that no rule matches gets."""

    rules: tuple[PeerRule, ...] = ()
    accept_unknown: bool = True


@dataclass(frozen=True)
class Decision:
    """Accept with `rule` (None: no rule matched), or refuse with `rejection`."""

    rule: PeerRule | None = None
    rejection: Rejection | None = None
    # Why, naming the rule and the peer, for the log line of a refusal.
    why: str = ""

    @property
    def accepted(self) -> bool:
        return self.rejection is None


def _refuse(rejection: Rejection, why: str) -> Decision:
    return Decision(rejection=rejection, why=why)


def decide(
    policy: AccessPolicy,
    max_associations: int,
    request: tuple[str, str, str],
    running: int,
    running_by_rule: Mapping[str, int],
) -> Decision:
    """The verdict on one A-ASSOCIATE-RQ (calling AE, called AE, peer address), with
    `running` associations open now, `running_by_rule` of them per rule."""
    calling, called, address = request
    peer = f"{calling} from {address}"
    if running >= max_associations:
        return _refuse(
            Rejection.LOCAL_LIMIT_EXCEEDED,
            f"{peer}: max-associations = {max_associations} are running",
        )
    rule = next((r for r in policy.rules if r.matches(calling, address)), None)
    if rule is None:
        if policy.accept_unknown:
            return Decision()
        return _refuse(
            Rejection.CALLING_AE_NOT_RECOGNIZED,
            f"{peer}: no [peer] rule matches and default-policy = reject",
        )
    if rule.called_aetitles and called not in rule.called_aetitles:
        return _refuse(
            Rejection.CALLED_AE_NOT_RECOGNIZED,
            f"{peer}: [peer {rule.name}] allows called AE titles"
            f" {', '.join(rule.called_aetitles)}, not {called}",
        )
    if rule.max_associations is not None and (
        running_by_rule.get(rule.name, 0) >= rule.max_associations
    ):
        return _refuse(
            Rejection.LOCAL_LIMIT_EXCEEDED,
            f"{peer}: [peer {rule.name}] allows {rule.max_associations} associations at once",
        )
    return Decision(rule=rule)


class Admission:
    """Running associations, all and per rule, shared by the receivers that reloads replace.

    `admit` decides and counts in one step, so that two requests arriving together
    cannot both take the last place.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._by_rule: Counter[str] = Counter()

    def admit(
        self, policy: AccessPolicy, max_associations: int, request: tuple[str, str, str]
    ) -> Decision:
        with self._lock:
            decision = decide(policy, max_associations, request, self._running, self._by_rule)
            if decision.accepted:
                self._running += 1
                if decision.rule is not None:
                    self._by_rule[decision.rule.name] += 1
            return decision

    def leave(self, decision: Decision) -> None:
        """An association that `admit` accepted has ended."""
        with self._lock:
            self._running -= 1
            if decision.rule is not None:
                self._by_rule[decision.rule.name] -= 1

    @property
    def running(self) -> int:
        with self._lock:
            return self._running
