"""Verification of an output directory against what was sent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from bench.loadbench import corpus
from bench.loadbench.verify import sample, verify


@pytest.fixture
def sent(tmp_path: Path) -> corpus.Corpus:
    directory = tmp_path / "sent"
    return corpus.Corpus(corpus.write(directory, "small", 6, seed=1), directory)


@pytest.fixture
def stored(tmp_path: Path, sent: corpus.Corpus) -> Path:
    """What a faithful receiver leaves: every file, in a layout of its own."""
    out = tmp_path / "out"
    for index, path in enumerate(sent.paths()):
        target = out / f"sub{index % 2}" / f"OT.{index}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return out


def test_everything_stored_as_sent_verifies(sent: corpus.Corpus, stored: Path) -> None:
    result = verify(stored, sent.by_uid(), sample_size=10, seed=0)
    assert result.ok, result.problems()
    assert (result.files, result.expected, result.compared) == (6, 6, 6)


def test_a_missing_instance_fails(sent: corpus.Corpus, stored: Path) -> None:
    victim = next(stored.rglob("OT.3"))
    uid = str(pydicom.dcmread(victim).SOPInstanceUID)
    victim.unlink()
    result = verify(stored, sent.by_uid(), sample_size=0, seed=0)
    assert not result.ok
    assert result.missing == [uid]
    assert "5 files for 6" in result.problems()


def test_an_extra_file_fails(sent: corpus.Corpus, stored: Path) -> None:
    (stored / "leftover.tmp").write_bytes(b"partial")
    result = verify(stored, sent.by_uid(), sample_size=0, seed=0)
    assert not result.ok
    assert result.unreadable == ["leftover.tmp"]


def test_a_duplicate_fails(sent: corpus.Corpus, stored: Path) -> None:
    shutil.copyfile(next(stored.rglob("OT.0")), stored / "OT.0.again")
    result = verify(stored, sent.by_uid(), sample_size=0, seed=0)
    assert not result.ok
    assert len(result.duplicates) == 1


def test_an_instance_that_was_not_sent_fails(sent: corpus.Corpus, stored: Path) -> None:
    expected = sent.by_uid()
    expected.pop(sorted(expected)[0])
    result = verify(stored, expected, sample_size=0, seed=0)
    assert not result.ok
    assert len(result.unexpected) == 1


def test_changed_pixel_data_in_the_sample_fails(sent: corpus.Corpus, stored: Path) -> None:
    victim = next(stored.rglob("OT.0"))  # a Secondary Capture: even index
    ds = pydicom.dcmread(victim)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(victim)
    result = verify(stored, sent.by_uid(), sample_size=10, seed=0)
    assert result.differing == [str(ds.SOPInstanceUID)]
    assert not result.ok


def test_a_changed_report_in_the_sample_fails(sent: corpus.Corpus, stored: Path) -> None:
    victim = next(stored.rglob("OT.1"))  # a Basic Text SR: no Pixel Data
    ds = pydicom.dcmread(victim)
    ds.ContentSequence[0].TextValue = "changed"
    ds.save_as(victim)
    result = verify(stored, sent.by_uid(), sample_size=10, seed=0)
    assert result.differing == [str(ds.SOPInstanceUID)]


def test_a_transcoded_instance_fails(sent: corpus.Corpus, stored: Path) -> None:
    victim = next(stored.rglob("OT.2"))
    ds = pydicom.dcmread(victim)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(victim, implicit_vr=True, little_endian=True)
    result = verify(stored, sent.by_uid(), sample_size=0, seed=0)
    assert result.not_explicit_vr_le == ["OT.2"]
    assert not result.ok


def test_the_sample_has_the_first_and_last_and_is_seeded() -> None:
    uids = [f"1.2.{n}" for n in range(50)]
    drawn = sample(uids, 3, seed=5)
    assert min(uids) in drawn
    assert max(uids) in drawn
    assert 3 <= len(drawn) <= 5
    assert drawn == sample(list(reversed(uids)), 3, seed=5)
    assert sample([], 3, seed=5) == []
