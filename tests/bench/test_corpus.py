"""The corpora: deterministic from their seed, shaped as promised, reused when whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom

from bench.loadbench import corpus


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    for kind, count in (("ct", 3), ("small", 4)):
        first = corpus.write(tmp_path / f"{kind}-a", kind, count, seed=7)
        second = corpus.write(tmp_path / f"{kind}-b", kind, count, seed=7)
        assert first == second
        assert digests(tmp_path / f"{kind}-a") == digests(tmp_path / f"{kind}-b")
        assert len(first.entries) == count


def test_another_seed_or_stream_gives_other_uids_and_pixels(tmp_path: Path) -> None:
    base = corpus.write(tmp_path / "a", "ct", 2, seed=1)
    reseeded = corpus.write(tmp_path / "b", "ct", 2, seed=2)
    probe = corpus.write(tmp_path / "c", "ct", 2, seed=1, stream="probe")
    uids = [{e.sop_instance_uid for e in m.entries} for m in (base, reseeded, probe)]
    assert not uids[0] & uids[1]
    assert not uids[0] & uids[2]
    pixels = {
        pydicom.dcmread(directory / "ct_000000.dcm").PixelData
        for directory in (tmp_path / "a", tmp_path / "b", tmp_path / "c")
    }
    assert len(pixels) == 3


def test_ct_is_half_a_megabyte_in_several_studies_and_series(tmp_path: Path) -> None:
    manifest = corpus.write(tmp_path, "ct", 20, seed=1)
    datasets = [pydicom.dcmread(path) for path in corpus.Corpus(manifest, tmp_path).paths()]
    assert {ds.SOPClassUID for ds in datasets} == {corpus.CT_IMAGE}
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in datasets} == {"1.2.840.10008.1.2.1"}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 10
    assert len({ds.StudyInstanceUID for ds in datasets}) == 4
    assert all(len(ds.PixelData) == 512 * 512 * 2 for ds in datasets)
    assert all(520_000 < entry.bytes < 530_000 for entry in manifest.entries)
    assert manifest.total_bytes == sum(path.stat().st_size for path in tmp_path.glob("*.dcm"))


def test_small_alternates_secondary_capture_and_text_sr(tmp_path: Path) -> None:
    manifest = corpus.write(tmp_path, "small", 4, seed=1)
    classes = [entry.sop_class_uid for entry in manifest.entries]
    assert classes == [corpus.SECONDARY_CAPTURE, corpus.BASIC_TEXT_SR] * 2
    assert all(entry.bytes < 20_000 for entry in manifest.entries)
    report = pydicom.dcmread(tmp_path / manifest.entries[1].file)
    assert report.ContentSequence[0].TextValue


def test_big_holds_the_frames_asked_for(tmp_path: Path) -> None:
    manifest = corpus.write(tmp_path, "big", 1, seed=1, size_mb=2)
    ds = pydicom.dcmread(tmp_path / manifest.entries[0].file)
    assert ds.NumberOfFrames == 4
    assert len(ds.PerFrameFunctionalGroupsSequence) == 4
    assert len(ds.PixelData) == 2 * 2**20


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = corpus.write(tmp_path, "small", 2, seed=3)
    assert corpus.Manifest.from_json(manifest.to_json()) == manifest
    assert corpus.load(tmp_path) == manifest


def test_ensure_reuses_a_whole_corpus_and_rewrites_a_damaged_one(tmp_path: Path) -> None:
    corpus.ensure(tmp_path, "small", 3, seed=1)
    first = tmp_path / "small_000000.dcm"
    stamp = first.stat().st_mtime_ns
    corpus.ensure(tmp_path, "small", 3, seed=1)
    assert first.stat().st_mtime_ns == stamp

    first.write_bytes(first.read_bytes()[:-10])
    corpus.ensure(tmp_path, "small", 3, seed=1)
    assert first.stat().st_size == corpus.load(tmp_path).entries[0].bytes

    bigger = corpus.ensure(tmp_path, "small", 5, seed=1)
    assert bigger.count == 5
    assert len(list(tmp_path.glob("*.dcm"))) == 5


def test_ensure_rewrites_a_corpus_cut_short_before_its_manifest(tmp_path: Path) -> None:
    corpus.write(tmp_path, "small", 2, seed=1)
    (tmp_path / corpus.MANIFEST).unlink()
    manifest = corpus.ensure(tmp_path, "small", 2, seed=1)
    assert (tmp_path / corpus.MANIFEST).is_file()
    assert manifest.count == 2


def test_corpus_directories_are_named_by_their_parameters(tmp_path: Path) -> None:
    names = {
        corpus.corpus_dir(tmp_path, kind, count, seed, stream=stream, size_mb=64).name
        for kind, count, seed, stream in (
            ("ct", 10, 1, "load"),
            ("ct", 10, 1, "probe"),
            ("ct", 20, 1, "load"),
            ("ct", 10, 2, "load"),
            ("small", 10, 1, "load"),
        )
    }
    assert len(names) == 5
