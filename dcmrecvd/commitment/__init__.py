"""Storage Commitment Push Model (PS3.4 Annex J): a modality asks, after its C-STOREs,
whether the receiver has safely stored a list of instances, and is told in an
N-EVENT-REPORT which ones it has (Referenced SOP Sequence) and which not, and why
(Failed SOP Sequence). The answer is read from the index and the files on disk, at the
moment the report is sent.

model.py is the pure part (requests, verdicts, reports, retries); check.py reads the
index and the disk; pending.py keeps the reports due in the index until they are
delivered; scp.py is the worker's side of a request; sender.py opens an association to
the requester to deliver a report.
"""
