"""libkv against each backend's raw client, side by side in one process.

``python -m bench.compare`` starts each server with the integration harness and
measures, interleaved so that the machine's noise hits both sides alike: get, put,
CAS update (read, then conditional write), get_many(100) against 100 gets, put to
watch event (median, p99), one put seen by 100 watchers, lock acquire/release, and the
memory of an idle watch. It prints a table of absolute figures and libkv/raw ratios
against the issue's targets, writes them as JSON and draws them as a PNG chart.

Modules: ``measure`` (the one copy of the timing code), ``raw`` (one raw-client
adapter per backend), ``report`` (targets, notes, machine, table, JSON, chart).
"""
