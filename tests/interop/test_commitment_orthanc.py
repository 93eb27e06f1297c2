"""Storage Commitment with Orthanc (Debian's 1.10.1) as the modality: it C-STOREs a set
to dcmrecvd, asks for commitment through its REST API (POST
/modalities/{id}/storage-commitment), and takes the report on its own DICOM port, on a
new association, as it expects (reports come asynchronously); GET
/storage-commitment/{transaction} shows what the report said."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.support import senders, waiting
from tests.support.daemon import conf, dcmrecvd
from tests.support.net import LOCALHOST, free_port
from tests.support.senders import Orthanc

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CORPUS = Path("/work/corpus/ct")
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
# Failure Reasons (0008,1197), as Orthanc shows them.
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
DEADLINE = 30.0


@dataclass
class Site:
    orthanc: Orthanc
    out: Path
    # The Orthanc IDs of the set, and the SOP instance UIDs of the same files.
    ids: list[str]
    uids: list[str]

    def ask(self, body: dict[str, Any]) -> str:
        """Ask dcmrecvd for commitment through Orthanc; the transaction's REST path."""
        status, answer = self.orthanc.call(
            "POST", "/modalities/receiver/storage-commitment", json.dumps(body).encode()
        )
        assert status == 200 and isinstance(answer, dict), (status, answer)
        return str(answer["Path"])

    def report(self, path: str) -> dict[str, Any]:
        """What Orthanc says the report on the transaction at `path` said, once it came."""

        def came() -> dict[str, Any] | None:
            status, answer = self.orthanc.call("GET", path)
            assert status == 200 and isinstance(answer, dict), (status, answer)
            return None if answer["Status"] == "Pending" else answer

        return waiting.found(came, f"Orthanc's report at {path}", DEADLINE)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if "Orthanc" in senders.missing_senders():
        pytest.fail("Orthanc is missing: run scripts/peers")
    root = tmp_path_factory.mktemp("commitment-orthanc")
    files = sorted(CORPUS.glob("ct_*.dcm"))[:12]
    assert len(files) == 12, f"the CT corpus is missing from {CORPUS}"
    port, orthanc_port = free_port(), free_port()
    out = root / "in"
    out.mkdir()
    extra = (
        "[commitment]\nretry-delay = 1s\n"
        "[peer orthanc]\ncalling-aetitle = ORTHANC\n"
        f"commitment-host = {LOCALHOST}\ncommitment-port = {orthanc_port}\n"
    )
    server = Orthanc(root / "orthanc", dicom_port=orthanc_port)
    daemon = dcmrecvd(root, conf(port, out, extra, index=str(root / "index.sqlite")))
    with daemon, server.running():
        ids = server.upload(files)
        modality = {"AET": "DCMRECVD", "Host": LOCALHOST, "Port": port}
        status, _ = server.call("PUT", "/modalities/receiver", json.dumps(modality).encode())
        assert status == 200
        job = json.dumps({"Resources": ids, "Synchronous": True}).encode()
        status, counts = server.call("POST", "/modalities/receiver/store", job)
        assert status == 200 and isinstance(counts, dict), (status, counts)
        assert (counts["InstancesCount"], counts["FailedInstancesCount"]) == (12, 0)
        uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
        yield Site(server, out, ids, uids)


def test_a_set_stored_is_reported_stored_in_full(site: Site) -> None:
    report = site.report(site.ask({"Resources": site.ids[:8]}))
    assert report["Status"] == "Success"
    assert report["RemoteAET"] == "DCMRECVD"
    assert report["Failures"] == []
    assert sorted(item["SOPInstanceUID"] for item in report["Success"]) == sorted(site.uids[:8])
    assert {item["SOPClassUID"] for item in report["Success"]} == {CT}


def test_instances_never_sent_deleted_or_of_another_class_fail_with_their_reason(
    site: Site,
) -> None:
    deleted = site.uids[8]
    (site.out / f"CT.{deleted}").unlink()
    never_sent = "1.2.826.0.1.3680043.10.77.1"
    body = {
        "DicomInstances": [
            {"SOPClassUID": CT, "SOPInstanceUID": site.uids[9]},
            {"SOPClassUID": CT, "SOPInstanceUID": deleted},
            {"SOPClassUID": CT, "SOPInstanceUID": never_sent},
            {"SOPClassUID": MR, "SOPInstanceUID": site.uids[10]},
        ]
    }
    report = site.report(site.ask(body))
    assert report["Status"] == "Failure"
    assert [item["SOPInstanceUID"] for item in report["Success"]] == [site.uids[9]]
    failures = {item["SOPInstanceUID"]: item["FailureReason"] for item in report["Failures"]}
    assert failures == {
        deleted: NO_SUCH_OBJECT_INSTANCE,
        never_sent: NO_SUCH_OBJECT_INSTANCE,
        site.uids[10]: CLASS_INSTANCE_CONFLICT,
    }
