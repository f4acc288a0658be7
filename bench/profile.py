"""`python -m bench.profile FILE [N]`: where a py-spy raw profile spent its samples.

Benchmarks run with BENCH_PROFILE=1 (and --keep) record synapse with py-spy; this prints
the N functions with the most samples on top of the stack (self) and anywhere in it
(inclusive), as shares of all samples.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarize(text: str, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples"
    out = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        out.append(f"-- top {top} by {title}")
        out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    print(summarize(Path(sys.argv[1]).read_text(errors="replace"), top))
