"""File and directory names: every example of the reference (sections 6.1-6.4), observed on
Debian's dcmrecv 3.6.7, plus safety properties over hostile input."""

from __future__ import annotations

import errno
import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydicom.uid import UID

from dcmrecvd.settings import NamingScheme, SubdirMode
from dcmrecvd.store.naming import (
    COULD_NOT_GENERATE_DIRECTORY_NAME,
    COULD_NOT_GENERATE_FILENAME,
    INVALID_SOP_CLASS_UID,
    INVALID_SOP_INSTANCE_UID,
    MAX_TRIES,
    FileNamer,
    NamingError,
    modality_prefix,
    subdirectory,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SRT = "1.2.840.10008.5.1.4.1.1.88.11"
PRIVATE = "1.2.3.999"
TODAY = date(2026, 11, 25)
ALLOWED = set(" -.0123456789:@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")

# The observed +fsu run: dcmrecv started at 0x6b066617 and received one second later.
FSU_START = 0x6B066617
FSU_NOW = datetime.fromtimestamp(FSU_START + 1, UTC)
FST_NOW = datetime(2026, 11, 25, 4, 37, 45, 828190)


def never(name: str) -> bool:
    return False


def unused(name: str) -> bool:
    raise AssertionError(f"exists() called for {name!r}")


def namer(
    scheme: NamingScheme,
    extension: str = "",
    start_time: int = FSU_START,
    new_uid: Callable[[], str] = lambda: "1.2.276.0.7230010.3.1.4.8323328.27260.1795581462.664599",
) -> FileNamer:
    return FileNamer(scheme, extension, start_time, new_uid)


def name_of(
    scheme: NamingScheme,
    sop_class: str = CT,
    instance: str = "1.2.3.4.100",
    extension: str = "",
    *,
    now: datetime = FST_NOW,
    exists: Callable[[str], bool] = never,
) -> str:
    return namer(scheme, extension).name(sop_class, instance, now=now, exists=exists)


def lcg_candidates(seed: int, count: int) -> list[str]:
    """The reference's +fsu recipe, restated independently of the module."""
    values = []
    for _ in range(count):
        r1 = (seed * 1103515245 + 12345) % 2**31
        r2 = (r1 * 1103515245 + 12345) % 2**31
        values.append(f"{((r1 & 0xFFFF) << 16) | (r2 & 0xFFFF):08x}")
        seed = r2
    return values


# --- 6.3 modality prefix -------------------------------------------------------------

ROOT = "1.2.840.10008.5.1.4.1"


@pytest.mark.parametrize(
    ("suffix", "prefix"),
    [
        ("1.2", "CT"),
        ("1.2.1", "CTe"),
        ("1.4", "MR"),
        ("1.4.1", "MRe"),
        ("1.1", "CR"),
        ("1.1.1", "DX"),
        ("1.1.1.1", "DP"),
        ("1.1.2", "DXm"),
        ("1.6.1", "US"),
        ("1.3.1", "USm"),
        ("1.20", "NM"),
        ("1.128", "PI"),
        ("1.12.1", "XA"),
        ("1.12.2", "RF"),
        ("1.7", "SC"),
        ("1.88.11", "SRt"),
        ("1.88.22", "SRe"),
        ("1.88.33", "SRc"),
        ("1.88.59", "KO"),
        ("1.104.1", "PDF"),
        ("1.11.1", "PSg"),
        ("1.66.4", "SG"),
        ("1.66", "RAW"),
        ("1.481.1", "RI"),
        ("1.481.2", "RD"),
        ("1.481.3", "RS"),
        ("1.481.5", "RP"),
        ("1.77.1.4", "VLp"),
        ("1.77.1.5.4", "OPt"),
        ("1.9.1.2", "ECG"),
        ("1.88.1", "SR_t"),
        ("1.9.1", "WV_d"),
        # 3.6.7 quirks: one prefix for two classes; Protocol Approval is PA, not PAp.
        ("1.88.70", "SRi"),
        ("1.88.75", "SRi"),
        ("1.200.3", "PA"),
    ],
)
def test_modality_prefix_table(suffix: str, prefix: str) -> None:
    assert modality_prefix(f"{ROOT}.{suffix}") == prefix


@pytest.mark.parametrize(
    "uid",
    [
        "",
        PRIVATE,
        "1.2.840.10008.1.1",  # Verification is not in the table
        CT + " ",  # exact match only: no trimming
        " " + CT,
        CT + ".0",
        "1.2.840.10008.5.1.4.1.1",
        # classes added after 3.6.7
        "1.2.840.10008.5.1.4.1.1.11.12",
        "1.2.840.10008.5.1.4.1.1.88.77",
    ],
)
def test_modality_prefix_unlisted(uid: str) -> None:
    assert modality_prefix(uid) is None


# --- 6.1 series-date subdirectory ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240115", "data/2024/01/15"),
        ("2023.03.04", "data/2023/03/04"),
        ("20230304\\20240506", "data/2023/03/04"),
        ("20240230", "data/2024/02/30"),  # no per-month check
        ("20240115 ", "data/2024/01/15"),
        ("20240115   ", "data/2024/01/15"),
        ("2023.03.04 \\x", "data/2023/03/04"),
        ("19000101", "data/1900/01/01"),
        ("99991231", "data/9999/12/31"),
        ("00000101", "data/0000/01/01"),  # any 4-digit year
        ("20241231", "data/2024/12/31"),
        ("20240131", "data/2024/01/31"),
        ("2024XX15", "undef/20261125"),
        ("", "undef/20261125"),
        (None, "undef/20261125"),  # element missing
        ("2024011", "undef/20261125"),
        ("20241301", "undef/20261125"),
        ("20240100", "undef/20261125"),
        ("20240132", "undef/20261125"),
        ("20240015", "undef/20261125"),
        ("00000000", "undef/20261125"),
        ("2024-01-15", "undef/20261125"),
        (" 20240115", "undef/20261125"),  # only trailing spaces are removed
        ("\\20240115", "undef/20261125"),  # the first value is empty
        ("202401150", "undef/20261125"),
        ("2024.0115", "undef/20261125"),
        ("2024.01.15.", "undef/20261125"),
        ("20240115\t", "undef/20261125"),
        ("\uff12\uff10\uff12\uff14\uff10\uff11\uff11\uff15", "undef/20261125"),  # fullwidth
        ("\u0662\u0660\u0662\u0664\u0660\u0661\u0661\u0665", "undef/20261125"),
        ("+0240115", "undef/20261125"),
    ],
)
def test_series_date_subdirectory(value: str | None, expected: str) -> None:
    assert subdirectory(SubdirMode.SERIES_DATE, value, "DA", TODAY) == expected


@pytest.mark.parametrize("vr", ["DT", "LO", "UN", "SH", None])
def test_series_date_needs_vr_da(vr: str | None) -> None:
    assert subdirectory(SubdirMode.SERIES_DATE, "20240115", vr, TODAY) == "undef/20261125"


def test_undefined_date_is_zero_padded_local_today() -> None:
    assert subdirectory(SubdirMode.SERIES_DATE, None, None, date(987, 6, 5)) == "undef/09870605"


def test_no_subdirectory_mode_ignores_the_date() -> None:
    assert subdirectory(SubdirMode.NONE, "20240115", "DA", TODAY) == ""
    assert subdirectory(SubdirMode.NONE, None, None, TODAY, dataset_available=False) == ""


def test_series_date_without_dataset_fails() -> None:
    with pytest.raises(NamingError) as info:
        subdirectory(SubdirMode.SERIES_DATE, None, None, TODAY, dataset_available=False)
    assert info.value.args == (COULD_NOT_GENERATE_DIRECTORY_NAME,)


# --- 6.2 +fd -------------------------------------------------------------------------


def test_default_scheme_examples() -> None:
    namer_ = namer(NamingScheme.DEFAULT, new_uid=lambda: pytest.fail("no UID under +fd"))
    assert namer_.name(CT, "1.2.3.4.100", now=FST_NOW, exists=unused) == "CT.1.2.3.4.100"
    assert name_of(NamingScheme.DEFAULT, SRT, "1.2.3.4.300", ".dcm") == "SRt.1.2.3.4.300.dcm"
    assert name_of(NamingScheme.DEFAULT, MR, "1.2.3.4.200") == "MR.1.2.3.4.200"
    assert name_of(NamingScheme.DEFAULT, PRIVATE, "1.2.3.4.998") == "UNKNOWN.1.2.3.4.998"
    assert name_of(NamingScheme.DEFAULT, ROOT + ".1.88.1", "9") == "SR_t.9"


def test_default_scheme_is_stable_for_duplicates() -> None:
    first = name_of(NamingScheme.DEFAULT, now=FST_NOW)
    later = name_of(NamingScheme.DEFAULT, now=FST_NOW + timedelta(days=3))
    assert first == later == "CT.1.2.3.4.100"


@pytest.mark.parametrize(
    ("sop_class", "instance", "reason"),
    [
        ("", "1.2.3", INVALID_SOP_CLASS_UID),
        (CT, "", INVALID_SOP_INSTANCE_UID),
        ("", "", INVALID_SOP_CLASS_UID),  # the class is checked first
    ],
)
def test_default_scheme_needs_both_uids(sop_class: str, instance: str, reason: str) -> None:
    with pytest.raises(NamingError) as info:
        name_of(NamingScheme.DEFAULT, sop_class, instance, exists=unused)
    assert info.value.args == (reason,)


# --- 6.2 +fu -------------------------------------------------------------------------


def test_unique_scheme_examples() -> None:
    assert (
        name_of(NamingScheme.UNIQUE, exists=unused)
        == "CT.X.1.2.276.0.7230010.3.1.4.8323328.27260.1795581462.664599"
    )
    assert name_of(NamingScheme.UNIQUE, PRIVATE, extension=".dcm") == (
        "UNKNOWN.X.1.2.276.0.7230010.3.1.4.8323328.27260.1795581462.664599.dcm"
    )


@pytest.mark.parametrize("scheme", [NamingScheme.UNIQUE, NamingScheme.SYSTEM_TIME])
def test_empty_uids_do_not_fail_outside_default_scheme(scheme: NamingScheme) -> None:
    assert "UNKNOWN" in name_of(scheme, "", "")


def test_unique_scheme_asks_for_a_fresh_uid_each_time() -> None:
    counter = itertools.count(1)
    unique = namer(NamingScheme.UNIQUE, new_uid=lambda: f"2.25.{next(counter)}")
    names = [unique.name(CT, "1.2.3", now=FST_NOW, exists=unused) for _ in range(3)]
    assert names == ["CT.X.2.25.1", "CT.X.2.25.2", "CT.X.2.25.3"]


def test_unique_scheme_default_generator_makes_valid_distinct_uids() -> None:
    unique = FileNamer(NamingScheme.UNIQUE, ".dcm", 0)
    names = {unique.name(MR, "1", now=FST_NOW, exists=unused) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith("MR.X.") and name.endswith(".dcm")
        assert UID(name[len("MR.X.") : -len(".dcm")]).is_valid


# --- 6.2 +fst ------------------------------------------------------------------------


def test_system_time_scheme_examples() -> None:
    assert name_of(NamingScheme.SYSTEM_TIME, exists=unused) == "20261125043745.828190.CT"
    assert name_of(NamingScheme.SYSTEM_TIME, PRIVATE) == "20261125043745.828190.UNKNOWN"
    assert name_of(NamingScheme.SYSTEM_TIME, SRT, extension=".dcm") == (
        "20261125043745.828190.SRt.dcm"
    )


def test_system_time_scheme_pads_every_field() -> None:
    now = datetime(987, 1, 2, 3, 4, 5, 42)
    assert name_of(NamingScheme.SYSTEM_TIME, now=now) == "09870102030405.000042.CT"


def test_system_time_scheme_uses_the_wall_clock_it_is_given() -> None:
    local = datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    assert name_of(NamingScheme.SYSTEM_TIME, now=local) == "20261125235959.999999.CT"


# --- 6.2 +fsu ------------------------------------------------------------------------


def fsu(sop_class: str, exists: Callable[[str], bool] = never, extension: str = "") -> str:
    return namer(NamingScheme.SHORT_UNIQUE, extension).name(
        sop_class, "ignored", now=FSU_NOW, exists=exists
    )


def test_short_unique_observed_names() -> None:
    assert fsu(CT) == "CT_6b066617f8716656"
    # Different prefixes in the same second share the random part.
    assert fsu(SRT) == "SRt_6b066617f8716656"
    # Unknown class: XX, observed with a start of 0x6b066699.
    xx = FileNamer(NamingScheme.SHORT_UNIQUE, "", 0x6B066699)
    observed = xx.name(PRIVATE, "1", now=datetime.fromtimestamp(0x6B06669A, UTC), exists=never)
    assert observed == "XX_6b066699cbcbcfa8"
    # With +ssd -fe .dcm: data/2024/01/15/CT_6b066627df410ce6.dcm
    ssd = FileNamer(NamingScheme.SHORT_UNIQUE, ".dcm", 0x6B066627)
    observed = ssd.name(CT, "1", now=datetime.fromtimestamp(0x6B066628, UTC), exists=never)
    assert observed == "CT_6b066627df410ce6.dcm"


def test_short_unique_second_object_in_the_same_second() -> None:
    taken = {fsu(CT)}
    assert fsu(CT, exists=taken.__contains__) == "CT_6b066617f6d7cbc4"


def test_short_unique_asks_about_each_candidate_in_chain_order() -> None:
    asked: list[str] = []

    def exists(name: str) -> bool:
        asked.append(name)
        return len(asked) < 4

    result = fsu(MR, exists, ".dcm")
    expected = [f"MR_6b066617{v}.dcm" for v in lcg_candidates(FSU_START + 1, 4)]
    assert asked == expected
    assert result == expected[-1]


def test_short_unique_reseeds_from_the_clock_each_call() -> None:
    short = namer(NamingScheme.SHORT_UNIQUE)
    a = short.name(CT, "1", now=FSU_NOW, exists=never)
    b = short.name(CT, "1", now=FSU_NOW + timedelta(microseconds=999_999), exists=never)
    c = short.name(CT, "1", now=FSU_NOW + timedelta(seconds=1), exists=never)
    assert a == b  # time(NULL) has a resolution of one second
    assert c == f"CT_6b066617{lcg_candidates(FSU_START + 2, 1)[0]}"
    assert c != a


def test_short_unique_naive_now_is_local_time() -> None:
    naive = FSU_NOW.astimezone().replace(tzinfo=None)
    assert namer(NamingScheme.SHORT_UNIQUE).name(CT, "", now=naive, exists=never) == fsu(CT)


def test_short_unique_truncates_times_to_32_bits() -> None:
    late = FileNamer(NamingScheme.SHORT_UNIQUE, "", 2**32 + 0x10)
    now = datetime.fromtimestamp(2**32 + 0x11, UTC)
    assert late.name(CT, "", now=now, exists=never) == f"CT_00000010{lcg_candidates(0x11, 1)[0]}"


def test_short_unique_gives_up_after_1024_taken_names() -> None:
    asked: list[str] = []

    def always(name: str) -> bool:
        asked.append(name)
        return True

    with pytest.raises(NamingError) as info:
        fsu(CT, always)
    assert info.value.args == (COULD_NOT_GENERATE_FILENAME,)
    assert len(asked) == MAX_TRIES == 1024
    assert asked == [f"CT_6b066617{v}" for v in lcg_candidates(FSU_START + 1, 1024)]


def test_short_unique_succeeds_on_the_last_try() -> None:
    asked: list[str] = []

    def exists(name: str) -> bool:
        asked.append(name)
        return len(asked) < MAX_TRIES

    assert fsu(CT, exists) == f"CT_6b066617{lcg_candidates(FSU_START + 1, 1024)[-1]}"


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EIO])
def test_short_unique_stat_error_fails(code: int) -> None:
    asked: list[str] = []

    def broken(name: str) -> bool:
        asked.append(name)
        raise OSError(code, "stat failed")

    with pytest.raises(NamingError) as info:
        fsu(CT, broken)
    assert info.value.args == (COULD_NOT_GENERATE_FILENAME,)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == code
    assert asked == ["CT_6b066617f8716656"]


def test_short_unique_ignores_instance_uid() -> None:
    short = namer(NamingScheme.SHORT_UNIQUE)
    assert short.name(CT, "", now=FSU_NOW, exists=never) == fsu(CT)
    assert short.name(CT, "../x", now=FSU_NOW, exists=never) == fsu(CT)


# --- 6.4 sanitising ------------------------------------------------------------------


def test_sanitising_observed_examples() -> None:
    assert name_of(NamingScheme.DEFAULT, instance="../../evil/1.2") == "CT..._.._evil_1.2"
    assert name_of(NamingScheme.DEFAULT, instance="a/b c$d_e") == "CT.a_b c_d_e"


@pytest.mark.parametrize("scheme", list(NamingScheme))
def test_extension_is_sanitised_in_every_scheme(scheme: NamingScheme) -> None:
    name = name_of(scheme, extension=".d/cm", now=FSU_NOW)
    assert name.endswith(".d_cm")
    assert "/" not in name


def test_sanitising_maps_every_byte() -> None:
    for byte in range(256):
        char = chr(byte)  # pydicom decodes UI values as latin-1: one char per byte
        name = name_of(NamingScheme.DEFAULT, instance=f"1{char}2")
        assert name == ("CT.1" + (char if char in ALLOWED else "_") + "2"), hex(byte)


@pytest.mark.parametrize(
    ("extension", "suffix"),
    [
        (".dcm", ".dcm"),
        (".é", ".__"),  # two UTF-8 bytes in argv, two underscores
        (".€", ".___"),
        (".\udce9", "._"),  # an undecodable argv byte (surrogateescape) is one byte
        (".\ud800", ".___"),
        (" .x:y@z-", " .x:y@z-"),
        ("\\", "_"),
        ("\0", "_"),
    ],
)
def test_extension_bytes_are_sanitised(extension: str, suffix: str) -> None:
    assert name_of(NamingScheme.DEFAULT, instance="1", extension=extension) == "CT.1" + suffix


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ("é", "CT._"),  # latin-1, as pydicom decodes the command
        ("€", "CT.___"),  # not latin-1: its UTF-8 bytes
        ("1.2\x003", "CT.1.2_3"),
        ("\x7f\x80\xff", "CT.___"),
        ("1.2\\3.4", "CT.1.2_3.4"),
    ],
)
def test_instance_uid_bytes_are_sanitised(instance: str, expected: str) -> None:
    assert name_of(NamingScheme.DEFAULT, instance=instance) == expected


def test_new_uid_is_sanitised_under_unique_scheme() -> None:
    hostile = namer(NamingScheme.UNIQUE, new_uid=lambda: "../..\0/x")
    assert hostile.name(CT, "1", now=FST_NOW, exists=unused) == "CT.X..._..__x"


# --- safety beyond DCMTK ---------------------------------------------------------------

HOSTILE = [
    "",
    ".",
    "..",
    "/",
    "//",
    "../..",
    "/etc/passwd",
    "..\\..\\x",
    "\0",
    "a\0b",
    "\n\r\t\x1b",
    " ",
    "~",
    "$(rm -rf)",
    "`x`",
    "é",
    "€",
    "\U0001f600",
    "\ud800",
    "\udcff",
    "\x7f\x85\xa0",
    "x" * 10_000,
    "./" * 300,
]


def constant(value: str) -> Callable[[], str]:
    return lambda: value


@pytest.mark.parametrize("scheme", list(NamingScheme))
def test_no_hostile_input_escapes_the_directory(scheme: NamingScheme) -> None:
    checked = 0
    for sop_class, instance, extension in itertools.product(
        [CT, PRIVATE, "", "../CT", "\0"], HOSTILE, HOSTILE
    ):
        named = FileNamer(scheme, extension, FSU_START, constant(instance))
        try:
            name = named.name(sop_class, instance, now=FSU_NOW, exists=never)
        except NamingError:
            assert scheme is NamingScheme.DEFAULT
            assert not sop_class or not instance
            continue
        assert name not in ("", ".", "..")
        assert "/" not in name
        assert "\0" not in name
        assert set(name) <= ALLOWED, repr(name)
        checked += 1
    assert checked > 1000


def test_very_long_names_are_not_shortened() -> None:
    name = name_of(NamingScheme.DEFAULT, instance="1" * 300, extension=".dcm")
    assert name == "CT." + "1" * 300 + ".dcm"
    assert len(name.encode()) > 255  # the caller's write fails: ENAMETOOLONG -> 0xA700
