"""Speed and memory figures of resgan (``make bench``); not part of the test suite."""
