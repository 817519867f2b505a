"""The engine's thread tuner (server/threads.py): it measures each candidate and keeps the fastest."""
import time

from lstmgen.server.threads import ThreadTuner


def test_the_tuner_keeps_the_faster_thread_count_and_follows_a_change():
    applied = []
    cost = {1: 0.001, 2: 0.010}  # two threads slow (a core is busy elsewhere)
    tuner = ThreadTuner([1, 2], period=0.0, trial=3, set_threads=applied.append)
    assert tuner.best == 2 and applied == [2]  # all threads until measured
    time.sleep(0.01)
    for _ in range(6):  # a trial: 1, 2, 1, 2, 1, 2
        tuner.before_step()
        tuner.after_step(cost[tuner.current])
    assert tuner.best == 1
    cost = {1: 0.004, 2: 0.002}  # the other process ended: two threads win again
    for _ in range(6):
        tuner.before_step()
        tuner.after_step(cost[tuner.current])
    assert tuner.best == 2


def test_one_candidate_is_never_measured():
    applied = []
    tuner = ThreadTuner([3], period=0.0, set_threads=applied.append)
    for _ in range(10):
        tuner.before_step()
        tuner.after_step(1.0)
    assert applied == [3] and tuner.best == 3
