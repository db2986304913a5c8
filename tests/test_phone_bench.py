"""`bankbot bench phone` end to end on a tiny scale (stand-in Rasa, no speech model): calls go through both ways,
the gateway's and the callers' counts agree, and short calls leave no task or descriptor behind."""

from __future__ import annotations

from bankbot.layout import ProjectLayout
from bankbot.phone_bench import PhoneBenchConfig, run_bench


def test_the_phone_bench_carries_calls_both_ways_and_counts_what_it_measures() -> None:
    config = PhoneBenchConfig(
        parts=frozenset({"A", "C"}), steps=(2,), seconds=2.0, sequential=8, leak_warmup_calls=4, model=None
    )
    result = run_bench(ProjectLayout(), config)

    step = result["capacity"]["steps"][0]
    assert step["calls"] == step["answered"] == 2 and step["failed_calls"] == 0
    # Two calls of at least two seconds: 50 frames a second each way, every one of them seen at the other end.
    assert step["gateway_packets_out"] >= 200 and step["caller_packets_sent"] >= 200
    # (A packet or two a call may cross the BYE and find the caller's socket closed.)
    assert abs(step["caller_packets_received"] + step["caller_lost"] - step["gateway_packets_out"]) <= 4
    assert step["gateway_packets_in"] + step["gateway_lost_in"] >= step["caller_packets_sent"] - 10
    assert step["caller_speech_packets_received"] > 0  # the greeting was heard
    assert step["setup_ms"]["n"] == 2 and step["gateway_setup_ms_p95"] is not None
    assert 0 <= step["underrun_ratio"] < 1 and step["gateway_cpu_percent"] > 0

    leaks = result["leaks"]
    assert [sample["calls"] for sample in leaks["samples"]] == [0, 2, 4, 6, 8]
    assert leaks["failures"] == {} and leaks["setup_ms"]["n"] == 8
    assert leaks["tasks_delta"] <= 0 and leaks["open_fds_delta"] <= 0
    assert "latency" not in result
