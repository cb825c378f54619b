"""The embedded drivers' feeds: a watch far behind reads the history in bounded
batches (so an async watch's step holds its event loop a bounded time), never a
revision split, every change once."""

from __future__ import annotations

from pathlib import Path

import pytest

import libkv
from libkv import Action, ops
from libkv.driver import BATCH_CHANGES, Event, FeedBatch

PER_REVISION = 10
KEYS = 3 * BATCH_CHANGES // PER_REVISION * PER_REVISION


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_a_feed_far_behind_reads_the_history_in_bounded_batches(
    scheme: str, tmp_path: Path
) -> None:
    url = "memory://?history=100000" if scheme == "memory" else f"sqlite:///{tmp_path}/feed.db"
    with libkv.open(url) as store:
        after = store.put("elsewhere", b"x").version
        for start in range(0, KEYS, PER_REVISION):
            store.transaction(
                [ops.put(f"p/{index:05}", b"v") for index in range(start, start + PER_REVISION)]
            )
            store.put("elsewhere", b"x")
        store.delete_tree("p")  # one revision of KEYS deletes
        last = store.put("p/last", b"v").version
        feed = store._backend.open_feed(store._root + "p", after)
        try:
            batches: list[FeedBatch] = []
            while not batches or batches[-1].revision < last:
                batch = feed.poll(1.0)
                assert batch is not None, f"the feed stopped at {batches[-1].revision}"
                batches.append(batch)
        finally:
            feed.close()
    changes: list[Event] = [change for batch in batches for change in batch.changes]
    assert [change.key.rpartition("/")[2] for change in changes] == [
        *(f"{index:05}" for index in range(KEYS)),
        *(f"{index:05}" for index in range(KEYS)),
        "last",
    ]
    assert [change.action for change in changes].count(Action.DELETE) == KEYS
    delete_revision = changes[KEYS].revision
    for batch in batches:
        revisions = [change.revision for change in batch.changes]
        assert revisions, "an empty batch"
        assert batch.revision >= revisions[-1]
        before_last = len(revisions) - revisions.count(revisions[-1])
        assert before_last < BATCH_CHANGES, "a batch went on past its limit"
        if delete_revision in revisions:
            assert revisions.count(delete_revision) == KEYS, "the delete_tree was split"
        else:
            assert len(revisions) < BATCH_CHANGES + PER_REVISION, len(revisions)
    assert len(batches) > KEYS // (BATCH_CHANGES + PER_REVISION)
