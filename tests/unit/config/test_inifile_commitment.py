"""The INI file's [commitment] section and the report destinations of [peer NAME]:
values, defaults, and errors with their line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dcmrecvd.config import inifile
from dcmrecvd.settings import CommitmentSettings, ReportDestination
from tests.support.paths import REPO

# Three lines: the first line of a test's own text is line 4.
HEAD = "[receiver]\noutput-directory = {tmp}/in\nindex = {tmp}/in/.index.sqlite\n"
PEER = "[peer ct]\ncalling-aetitle = CT1\n"


def commitment_of(tmp_path: Path, text: str, head: str = HEAD) -> CommitmentSettings | None:
    return inifile.parse(head.format(tmp=tmp_path) + text, "test.conf").settings.commitment


def error_of(tmp_path: Path, text: str, head: str = HEAD) -> inifile.ConfigError:
    with pytest.raises(inifile.ConfigError) as info:
        commitment_of(tmp_path, text, head)
    assert info.value.path == "test.conf"
    return info.value


def test_off_without_the_section(tmp_path: Path) -> None:
    assert commitment_of(tmp_path, PEER) is None
    assert inifile.parse("", "test.conf").settings.commitment is None


def test_the_section_alone_turns_it_on_with_its_defaults(tmp_path: Path) -> None:
    assert commitment_of(tmp_path, "[commitment]\n") == CommitmentSettings()
    assert CommitmentSettings() == CommitmentSettings(
        verify=False, retry_delay=30.0, give_up_after=86400.0, destinations=()
    )


def test_values_and_destinations_by_peer(tmp_path: Path) -> None:
    found = commitment_of(
        tmp_path,
        "[commitment]\nverify = yes\nretry-delay = 5s\ngive-up-after = 2h\n"
        + PEER
        + "commitment-host = ct1.example\ncommitment-port = 104\n"
        "[peer mr]\ncommitment-aetitle = MR_STORE\ncommitment-host = 192.0.2.3\n"
        "commitment-port = 11112\n"
        "[peer other]\ncalling-aetitle = US\n",
    )
    assert found == CommitmentSettings(
        verify=True,
        retry_delay=5.0,
        give_up_after=7200.0,
        destinations=(
            ("ct", ReportDestination("ct1.example", 104)),
            ("mr", ReportDestination("192.0.2.3", 11112, "MR_STORE")),
        ),
    )


def test_a_tls_destination_needs_the_tls_section(tmp_path: Path) -> None:
    text = (
        "[commitment]\n" + PEER + "commitment-host = h\ncommitment-port = 1\ncommitment-tls = yes\n"
    )
    error = error_of(tmp_path, text)
    assert (error.line, error.reason) == (
        9,
        "commitment-tls: needs a [tls] section (its certificate, key and trust)",
    )
    tls = "[tls]\nprivate-key = key.pem\ncertificate = cert.pem\n"
    found = commitment_of(tmp_path, tls + text)
    assert found is not None
    assert found.destinations == (("ct", ReportDestination("h", 1, tls=True)),)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[commitment]\nverify = maybe\n", 5, "verify: not yes or no: 'maybe'"),
        ("[commitment]\nretry-delay = 0\n", 5, "retry-delay: must be more than 0: '0'"),
        ("[commitment]\ngive-up-after = soon\n", 5, "give-up-after: not a duration"),
        ("[commitment]\nretries = 3\n", 5, "unknown key 'retries' in section [commitment]"),
        (
            "[commitment]\n" + PEER + "commitment-host = h\n",
            7,
            "[peer ct]: a report destination needs commitment-port",
        ),
        (
            "[commitment]\n" + PEER + "commitment-port = 104\n",
            7,
            "[peer ct]: a report destination needs commitment-host",
        ),
        (
            "[commitment]\n" + PEER + "commitment-host = h\ncommitment-port = 0\n",
            8,
            "commitment-port: 0 is out of range (must be from 1 to 65535)",
        ),
        (
            "[commitment]\n"
            + PEER
            + "commitment-host = h\ncommitment-port = 1\ncommitment-aetitle = A\\B\n",
            9,
            "commitment-aetitle: not an AE title",
        ),
        (
            PEER + "commitment-host = h\n",
            6,
            "commitment-host: needs a [commitment] section (commitment is off)",
        ),
    ],
)
def test_errors_name_the_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    error = error_of(tmp_path, text)
    assert error.line == line
    assert reason in error.reason


def test_commitment_needs_the_index(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[receiver]\noutput-directory = x\n\n[commitment]\n", head="")
    assert error.line == 4
    assert "set index in [receiver]" in error.reason


def test_the_shipped_file_leaves_it_off_and_its_examples_parse(tmp_path: Path) -> None:
    shipped = REPO / "etc/dcmrecvd/dcmrecvd.conf"
    assert inifile.load(shipped).settings.commitment is None
    text = shipped.read_text()
    examples = text[text.index("# Storage Commitment") :]
    # The commented sections and keys, as an administrator would uncomment them.
    lines = re.findall(r"^# (\[.*\]|[a-z-]+ = .*)$", examples, re.MULTILINE)
    found = commitment_of(tmp_path, "\n".join(lines) + "\n")
    assert found == CommitmentSettings(
        destinations=(("ct-scanner-reports", ReportDestination("10.20.0.5", 104, "CT02")),)
    )
