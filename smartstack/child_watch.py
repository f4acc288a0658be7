"""asyncio's children waited for by pidfd, not by a thread per child (Python 3.11).

3.11's default ThreadedChildWatcher starts a thread per child process to wait for it. At a
container's pids limit (threads count) the fork can succeed and that thread cannot start:
asyncio then never waits for nor closes the child (review s34: a zombie per ``haproxy -c``,
a live validating child of 15 MB per try, each holding one of the pids the retry waits for;
an Airbnb-mode reload command that ran was said to have failed). A pidfd is read by the
event loop itself: no thread. 3.12 chooses it by itself where the kernel has pidfd_open.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings


def use_pidfds() -> bool:
    """Install the pidfd child watcher (before ``asyncio.run``); whether it is in use."""
    if sys.version_info >= (3, 12):
        return True  # (asyncio's own choice there: pidfds when the kernel has them)
    try:
        os.close(os.pidfd_open(os.getpid()))  # Linux 5.3+: an older kernel keeps the thread
    except (AttributeError, OSError):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return True
