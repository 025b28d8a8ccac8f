"""DR drills on the built-in simulator: serve it, break it, recover it, report on it."""
