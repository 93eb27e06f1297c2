"""The physical-limit probes and the latency probe's bookkeeping (no rates asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.loadbench import certs, probes
from bench.loadbench.probes import Sample


def test_durable_files_are_all_in_place_and_no_temporary_is_left(tmp_path: Path) -> None:
    rate = probes.durable_file_rate(tmp_path / "disk", writers=3, files=10, file_bytes=4096)
    names = sorted(path.name for path in (tmp_path / "disk").iterdir())
    assert names == [f"f{index:06d}" for index in range(10)]
    assert all((tmp_path / "disk" / name).stat().st_size == 4096 for name in names)
    assert (rate.writers, rate.files, rate.file_bytes) == (3, 10, 4096)
    assert rate.p50_ms <= rate.p99_ms
    assert rate.mb_per_s == pytest.approx(rate.files_per_s * 4096 / 1e6)


def test_loopback_moves_whole_chunks_plain_and_over_tls(tmp_path: Path) -> None:
    plain = probes.loopback_rate(3 * probes.CHUNK + 5)
    assert (plain.tls, plain.bytes) == (False, 3 * probes.CHUNK)
    tls = probes.loopback_rate(2 * probes.CHUNK, certs.self_signed(tmp_path))
    assert (tls.tls, tls.bytes) == (True, 2 * probes.CHUNK)


def test_the_tls_identity_is_made_once(tmp_path: Path) -> None:
    first = certs.self_signed(tmp_path)
    assert first.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert "BEGIN CERTIFICATE" in first.certificate.read_text()
    stamp = first.certificate.stat().st_mtime_ns
    assert certs.self_signed(tmp_path) == first
    assert first.certificate.stat().st_mtime_ns == stamp


def test_only_samples_answered_during_the_load_count() -> None:
    samples = [
        Sample("1", sent=1.0, answered=1.002, status=0),
        Sample("2", sent=2.0, answered=2.010, status=0xA700),
        Sample("3", sent=3.0, answered=3.5, status=0),
    ]
    latencies = probes.under_load(samples, ended=3.0)
    assert [round(value, 3) for value in latencies] == [2.0, 10.0]
    assert probes.stored_under_load(samples, ended=3.0) == {"1"}
    assert probes.stored_under_load(samples, ended=4.0) == {"1", "3"}
