"""Stand-in for `modules.call_queue`: the one lock that A1111's GPU work waits on, in turn."""

import threading

queue_lock = threading.Lock()
"""A1111's is a FIFO lock (`fifo_lock.FIFOLock`), not re-entrant either."""
