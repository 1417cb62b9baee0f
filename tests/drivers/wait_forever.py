"""Test driver: prints "ready", then waits until it is stopped.

--ignore-sigterm: a driver that will not stop on SIGTERM (only SIGKILL ends it).
"""

import signal
import sys
import time

if "--ignore-sigterm" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
