"""dcmrecvd's own load benchmark (issue 15): corpora, receivers, pushes, probes, tables.

bench/load.py is the command; bench/README.md says how to run it.
"""
