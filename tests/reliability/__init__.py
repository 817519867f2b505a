"""Reliability tests: interruptions, bad input, loading, numerics, the server under stress."""
import signal


def default_sigint() -> None:
    """For subprocesses that a test interrupts: Ctrl-C as a terminal delivers it, also when the suite itself
    runs in the background (a shell starts background jobs with SIGINT ignored, children inherit that, and
    Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
