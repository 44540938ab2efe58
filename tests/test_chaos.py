"""Chaos: the example project (examples/reviews) against the emulator while 20% of batches expire part-way,
5% of answered lines go missing and a few runs are killed (SIGKILL) at random named crash points; it is run
again until a run exits 0. Then every row is answered, no request was answered twice but where its line went
missing, and no shard's batch was created twice. Seeded: the same faults and kills every time."""

from __future__ import annotations

import json
import random
from collections import Counter

from llmt.crash import POINTS
from tests.conftest import Project, example_on_emulator
from tests.emulator import Chaos, Emulator, fixtures
from tests.test_crash_safety import llmt_run

emulator = fixtures.emulator
SEED = 6
PER_BATCH = 20
KILLS = 3


def test_the_example_ends_answered_through_expiry_missing_lines_and_kills(example: Project,
                                                                          emulator: Emulator) -> None:
    example_on_emulator(example, poll_interval=0.001, max_requests_per_batch=PER_BATCH, timeout=10)
    emulator.faults.chaos = Chaos(SEED, expire=0.2, drop=0.05, batch_size=PER_BATCH)
    kills = random.Random(SEED).sample(POINTS, KILLS)
    codes = []
    for crash_at in [*kills, None]:  # killed runs, then a run that must end well
        done = llmt_run(example.root, emulator, crash_at)
        codes.append(done.returncode)
        assert done.returncode in ((-9, 0) if crash_at else (0,)), f"killed at {crash_at}:\n{done.stderr}"
    assert codes.count(-9) >= 2, codes  # the kills happened (a point a run does not reach spares it)

    rows = example.query("select _llmt_status, count(*) from main.review_insights group by 1")
    assert [status for status, _ in rows] == ["ok"], rows
    keys = {k for (k,) in example.query("select distinct _llmt_request_key from main.review_insights")}
    assert example.query("select count(*) from _llmt.shards where status in ('written', 'uploaded', 'submitted')") \
        == [(0,)]
    # one answer and one ok attempt per request; the faults happened, and used up no attempt
    assert dict(example.query("select request_key, count(*) from _llmt.attempts where outcome = 'ok' group by 1")) \
        == dict.fromkeys(keys, 1)
    assert example.query("select count(*), count(distinct request_key) from _llmt.answers") == [(len(keys),) * 2]
    faults = dict(example.query("select outcome, count(*) from _llmt.attempts where outcome <> 'ok' group by 1"))
    assert set(faults) == {"expired", "missing"}, faults
    # no shard's batch created twice; an answer the server delivered (in an output file) was never asked for again,
    # and a request was answered more than once only for attempts whose answer never arrived (its line missing)
    assert set(emulator.seen.batches_per("shard_id").values()) == {1}
    delivered: Counter[str] = Counter()
    with emulator.store.lock:
        files = [r.obj.get("output_file_id") for r in emulator.store.batches.values()]
    for file_id in filter(None, files):
        delivered.update(json.loads(line)["custom_id"] for line in emulator.file_content(file_id).splitlines())
    assert delivered == Counter(dict.fromkeys(keys, 1))
    failed = Counter(dict(example.query("select request_key, count(*) from _llmt.attempts where outcome <> 'ok' "
                                        "group by 1")))
    assert all(emulator.seen.answered[k] <= 1 + failed[k] for k in keys)
    assert emulator.seen.answered.total() > len(keys)  # lines did go missing
