"""The health judgement behind `xrd-agent status` and HTTP /health: each problem gives a reason."""

from dataclasses import replace

from xrd_agent.service.health import Observed, healthy, reasons

READY = Observed(state="ready", folder="/srv/d8", folder_present=True, worker_alive=True, worker_error=None,
                 worker_silent_s=0.1, max_silence_s=60.0, queue_depth=0, queue_size=256, model_loaded=True)


def test_a_ready_agent_is_healthy():
    assert reasons(READY) == [] and healthy(READY)


def test_each_problem_has_its_reason():
    cases = {
        "export folder /srv/d8 is missing": replace(READY, folder_present=False),
        "silent for 75 s": replace(READY, worker_silent_s=75.0),
        "worker thread is not running": replace(READY, worker_alive=False),
        "worker stopped (RuntimeError('disk'))": replace(READY, worker_alive=False, worker_error="RuntimeError('disk')"),
        "queue holds 240 of 256": replace(READY, queue_depth=240),
        "model is not loaded": replace(READY, model_loaded=False),
        "the agent is starting": replace(READY, state="starting", model_loaded=False, worker_alive=False),
        "draining (shutting down)": replace(READY, state="draining"),
    }
    for words, seen in cases.items():
        found = reasons(seen)
        assert len(found) == 1 and words in found[0], (words, found)
        assert not healthy(seen)


def test_a_queue_below_the_mark_is_fine():
    assert reasons(replace(READY, queue_depth=200)) == []
