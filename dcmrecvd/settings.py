"""Every knob of the receiver, with DCMTK dcmrecv 3.6.7's defaults.

dcmrecv's command line (apps/dcmrecv.py) and the daemon's INI file (config/inifile.py)
both produce one frozen Settings; the receiver and the store read nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from dcmrecvd.config.access import AccessPolicy, ProxyPolicy
from dcmrecvd.pathtemplate import Template

# DCMTK's ASC_MINIMUMPDUSIZE and ASC_MAXIMUMPDUSIZE: the range of -pdu and max-pdu, and the
# largest PDU DCMTK sends (also to a peer that sets no limit).
MIN_PDU = 4096
MAX_PDU = 131072


class SubdirMode(enum.Enum):
    """-s / +ssd."""

    NONE = "none"
    SERIES_DATE = "series-date"


class NamingScheme(enum.Enum):
    """+fd / +fu / +fsu / +fst."""

    DEFAULT = "default"
    UNIQUE = "unique"
    SHORT_UNIQUE = "short-unique"
    SYSTEM_TIME = "system-time"


class StorageMode(enum.Enum):
    """-B / +B / --ignore."""

    NORMAL = "normal"
    BIT_PRESERVING = "bit-preserving"
    IGNORE = "ignore"


class DuplicatePolicy(enum.Enum):
    """What storing an object under a file name that already exists does."""

    # DCMTK's behaviour: warn and replace the file (atomically).
    OVERWRITE = "overwrite"
    # Answer Success, warn, and keep the file already stored.
    KEEP_FIRST = "keep-first"
    # Store the new object under a unique variant of the name, with a warning.
    KEEP_BOTH = "keep-both"
    # Answer a failure status (0x0111, duplicate SOP instance) and keep the stored file.
    REJECT = "reject"


class LogLevel(enum.Enum):
    """DCMTK's logger levels, lowest threshold last."""

    FATAL = "fatal"
    ERROR = "error"
    WARN = "warn"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


# DCMTK 3.6.7 caps an SCP presentation-context list at 128 entries; dcmrecvd lifts it.
DCMTK_CONTEXT_LIST_LIMIT = 128


class TlsProfile(enum.Enum):
    """DCMTK's security profiles (+py, +px, +pz, +pa, +pn)."""

    BCP195_ND = "bcp195-nd"
    BCP195 = "bcp195"
    BCP195_EX = "bcp195-ex"
    AES = "aes"
    NULL = "null"


class PeerCertificate(enum.Enum):
    """-rc / -vc / -ic."""

    REQUIRE = "require"
    VERIFY = "verify"
    IGNORE = "ignore"


class CrlCheck(enum.Enum):
    """+crv (leaf) / +cra (whole chain); NONE without a CRL."""

    NONE = "none"
    LEAF = "leaf"
    CHAIN = "chain"


class KeyFormat(enum.Enum):
    PEM = "pem"
    DER = "der"


@dataclass(frozen=True)
class TlsSettings:
    """What the TLS listener needs; None password means ask on the terminal if needed."""

    private_key: Path
    certificate: Path
    password: str | None = None
    key_format: KeyFormat = KeyFormat.PEM
    ca_files: tuple[Path, ...] = ()
    ca_directories: tuple[Path, ...] = ()
    crl_files: tuple[Path, ...] = ()
    crl_check: CrlCheck = CrlCheck.NONE
    profile: TlsProfile = TlsProfile.BCP195_ND
    # OpenSSL cipher names added to the profile's (TLS 1.2).
    ciphers: tuple[str, ...] = ()
    dh_parameters: Path | None = None
    peer_certificate: PeerCertificate = PeerCertificate.REQUIRE
    # dcmrecvd: the TLS listener requires a PROXY protocol header (before the handshake).
    proxy: ProxyPolicy | None = None


class EventKind(enum.Enum):
    """What happened, for manifests and hooks."""

    INSTANCE_STORED = "instance-stored"
    SERIES_COMPLETE = "series-complete"
    STUDY_COMPLETE = "study-complete"


@dataclass(frozen=True)
class CompletionRule:
    """What completes a study before its quiet period ends: once every series of it is
    complete, it has at least `expected_series` series and a series of each of
    `required_modalities` (each part only when set). Neither set: the quiet period or
    the maximum age only."""

    expected_series: int | None = None
    required_modalities: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.expected_series is None and not self.required_modalities


@dataclass(frozen=True)
class Hook:
    """One [hook NAME] section: a command run for each event of a kind."""

    name: str
    event: EventKind
    # argv; each element may hold {placeholders}, each expanded within its element.
    command: tuple[str, ...]
    # Run only for events with an instance of one of these modalities; (): every event.
    modalities: tuple[str, ...] = ()
    timeout: float = 600.0
    # Runs after the first failure; the n-th waits retry_delay * 2**(n-1), at most an hour.
    retries: int = 3
    retry_delay: float = 30.0


@dataclass(frozen=True)
class EventSettings:
    """Series and study completion, manifests and hooks; their state is in the index."""

    # Seconds without a new instance of the series (study) that complete it.
    series_quiet: float = 60.0
    study_quiet: float = 180.0
    # Seconds after its first instance (of its generation) that a series or study
    # completes anyway, marked so; None: never.
    max_age: float | None = 24 * 3600.0
    # The rule for studies whose first instance came from a peer (or over a profile)
    # without one of its own.
    rule: CompletionRule = CompletionRule()
    # [peer NAME] and [profile NAME] rules, by name: a peer's rule before its profile's.
    peer_rules: tuple[tuple[str, CompletionRule], ...] = ()
    profile_rules: tuple[tuple[str, CompletionRule], ...] = ()
    # Manifests: the maildir (tmp/, new/) and, under hooks/, the hooks' own copies.
    directory: str = ".events"
    # The kinds whose manifests go into directory/new/ for a consumer to take.
    manifests: frozenset[EventKind] = frozenset()
    hooks: tuple[Hook, ...] = ()
    # Hook commands running at once, for all hooks together.
    hook_concurrency: int = 2


@dataclass(frozen=True)
class ReportDestination:
    """Where a [peer]'s Storage Commitment reports go when its association is gone."""

    host: str
    port: int
    # None: the calling AE title of the request.
    aetitle: str | None = None
    # Over DICOM TLS, with the [tls] certificate and trust.
    tls: bool = False


@dataclass(frozen=True)
class CommitmentSettings:
    """[commitment]: Storage Commitment requests and the reports they get (in the index)."""

    # Re-read each file's File Meta before saying that it is stored.
    verify: bool = False
    # The wait after a failed delivery of a report: doubled at each failure, up to an hour.
    retry_delay: float = 30.0
    # A report not delivered this long after its request is given up.
    give_up_after: float = 24 * 3600.0
    # The [peer] rules' destinations, by rule name.
    destinations: tuple[tuple[str, ReportDestination], ...] = ()


@dataclass(frozen=True)
class Settings:
    """One receiver's configuration."""

    port: int = 11112
    bind_address: str = ""
    aetitle: str = "DCMRECV"
    use_called_aetitle: bool = False
    # DCMTK 3.6.8+ rejects a called AE title that differs from -aet; 3.6.7 does not.
    check_called_aetitle: bool = False
    acse_timeout: int = 30
    dimse_timeout: int | None = None
    max_pdu: int = 16384
    host_lookup: bool = True
    # Associations served at once; DCMTK serves one at a time and queues the rest.
    max_associations: int = 64
    config_file: Path | None = None
    profile_name: str | None = None
    context_list_limit: int | None = DCMTK_CONTEXT_LIST_LIMIT
    output_dir: str = "."
    # dcmrecvd: this node's name in its temporary and quarantine file names, which tells
    # apart nodes sharing the output directory (nodename.py); None: the host name.
    node_name: str | None = None
    subdir: SubdirMode = SubdirMode.NONE
    naming: NamingScheme = NamingScheme.DEFAULT
    # dcmrecvd: the path under output_dir made from the dataset's elements, instead of
    # naming and subdir.
    path_template: Template | None = None
    # dcmrecvd: the SQLite file that lists every stored object; None: no index.
    index_path: str | None = None
    # dcmrecvd: completion, manifests and hooks (they need the index); None: none.
    events: EventSettings | None = None
    # dcmrecvd: Storage Commitment (it needs the index); None: the SOP class is not served.
    commitment: CommitmentSettings | None = None
    extension: str = ""
    storage: StorageMode = StorageMode.NORMAL
    # A second object under an existing file name (+fd, +fst; unique schemes never clash).
    duplicates: DuplicatePolicy = DuplicatePolicy.OVERWRITE
    # Free space to keep on the output directory's file system; below either reserve,
    # new associations are refused and stores answer 0xA700. 0 turns a reserve off.
    free_space_reserve_bytes: int = 0
    free_space_reserve_percent: float = 0.0
    # BENCHMARKING ONLY: skip fsync of files and directories. Success then no longer
    # means that the object is on disk; never set it on a receiver that modalities use.
    benchmark_skip_fsync: bool = False
    log_level: LogLevel = LogLevel.WARN
    log_config: Path | None = None
    verbose_pc: bool = False
    # dcmrecvd: seconds that associations in progress get to finish after SIGTERM.
    stop_grace: int = 30
    # dcmrecvd: worker processes accepting associations; None: one per CPU core.
    workers: int | None = None
    # dcmrecvd: where log lines go: auto (the journal under systemd, syslog when
    # detached, else stderr), stderr, journal, syslog, or the path of a file.
    log_destination: str = "auto"
    # dcmrecvd: per-peer rules and what unknown peers get (dcmrecv accepts every peer).
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # DICOM TLS on a listener of its own; None: no TLS.
    tls: TlsSettings | None = None
    # dcmrecvd: the plain listener requires a PROXY protocol header; None: off.
    proxy: ProxyPolicy | None = None
    # dcmrecvd: the TLS port when systemd passes no socket named dicom-tls.
    tls_port: int = 2762
    # dcmrecvd: refuse a dataset whose SOP Class/Instance UID differ from the request's
    # (0xA900) or are missing (0xC000), as storescp does; DCMTK's dcmrecv does not check.
    check_sop_uids: bool = False
    # dcmrecvd: where the bytes of refused objects are kept for inspection, at most
    # quarantine_max_bytes in all (the oldest go first); None: refused bytes are dropped.
    quarantine_dir: str | None = None
    quarantine_max_bytes: int = 1024**3
    # dcmrecvd: the Prometheus metrics endpoint (HTTP GET /metrics); None port: off.
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = None
    # dcmrecvd: the AF_UNIX socket that `dcmrecvd status` reads; None: off.
    status_socket: str | None = None
