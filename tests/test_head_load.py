"""The head-load benchmark (benchmarks/head_load.py) at a small N, so that it cannot rot: one
real head agent, the workers played over the real control protocol, every figure measured."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from head_load import LATE_PEERS, measure, rows_of  # noqa: E402

NODES = 50


def test_a_real_head_counts_every_simulated_worker_and_ends_cleanly():
    result = measure(NODES, driver_s=1, final_spread_s=0.5)
    assert result["exit_code"] == 0 and result["joined"] == NODES, result
    # Started with a soft limit of 1,024 open files, the head raised its own to the hard one.
    assert result["head_nofile"] == resource.getrlimit(resource.RLIMIT_NOFILE)[1], result
    # Every peer got the head's address, and "stop" at the end; each sent its final record.
    for figure in ("accept_ms", "hello_rtt_ms", "late_rtt_ms", "stop_ms"):
        assert result[figure]["max"] is not None, (figure, result)
    assert result["last_final_to_done_s"] is not None, result
    assert result["cpu_s"]["total"] > 0 and result["rss_mib"]["peak"] > 0, result
    # The head's own run-directory work: its files, status.json at most once a second, the
    # stop file once a second: a few dozen operations, none per worker.
    assert 0 < result["rundir_ops"] < 100, result
    assert result["status_writes"] >= 1, result
    # The head collected every worker's final record, the late ones too, into nodes.json.
    assert result["records"] == NODES + LATE_PEERS, result
    rows = rows_of([result])
    assert rows[0][:2] == ["peers (one process) + head", NODES]
