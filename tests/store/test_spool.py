"""Spool files: checksummed append-only lines that survive a killed writer and ingest idempotently."""

import os

from lsbench.store import Store
from lsbench.store.spool import SPOOL_DIR, SpoolWriter, decode_lines, encode_line, ingest


def test_lines_carry_a_checksum_and_broken_lines_are_skipped():
    good, other = encode_line({"op": "x", "n": 1}), encode_line({"op": "y", "n": 2})
    corrupted = good.replace(b'"n":1', b'"n":7')
    decoded = [record for _, record in decode_lines(good + corrupted + other + good[:10])]
    assert decoded == [{"op": "x", "n": 1}, None, {"op": "y", "n": 2}]  # the unterminated tail is not read at all


def test_a_truncated_line_does_not_swallow_the_next_one(tmp_path):
    writer = SpoolWriter(tmp_path, "sqlite:///x")
    writer.add_metrics("r1", 10, {"loss": 1.0})
    path = tmp_path / SPOOL_DIR / "r1.jsonl"
    with open(path, "ab") as file:  # a writer killed in the middle of its write
        file.write(encode_line({"op": "metrics", "run_id": "r1", "step": 20, "values": {"loss": 0.5}})[:15])
    writer.add_metrics("r1", 30, {"loss": 0.25})
    steps = [record["step"] for record in writer.records("r1")]
    assert steps == [10, 30]


def test_ingestion_is_idempotent_and_incremental(tmp_path, make_spec):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.upsert_sweep("s", "h", "t", str(tmp_path), "slurm")
    store.add_runs("s", [make_spec(run_id="a" * 16)])
    writer = SpoolWriter(tmp_path, store.redacted_url)
    run = "a" * 16
    writer.start_attempt(
        run, "job/1", backend="slurm", job_id="1", host="n1", pid=7, log_path="l", gpu=None, versions={}
    )
    writer.set_run_status(run, "running")
    for step in (10, 20):
        writer.add_metrics(run, step, {"train_loss": 1.0 / step, "val_acc": 0.5})
    assert ingest(store, tmp_path) == 4
    assert ingest(store, tmp_path) == 0  # nothing new
    writer.set_run_status(run, "completed", step=20, summary={"train_loss": 0.05})
    writer.end_attempt(run, "job/1", "completed", 0)
    assert ingest(store, tmp_path) == 2
    os.remove(tmp_path / SPOOL_DIR / ".offsets.json")  # a lost offsets file: everything is replayed
    assert ingest(store, tmp_path) == 6
    assert len(store.metrics(run)) == 4
    assert store.get_run(run).status == "completed"
    (attempt,) = store.attempts(run)
    assert attempt.status == "completed" and attempt.exit_code == 0
    assert writer.finished_status(run) == "completed"
    store.close()
