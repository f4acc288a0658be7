"""Server options a registry record may carry that HAProxy would refuse or misread.

Shared by the filter's unit tests and the integration test that runs `haproxy -c` on them.
"""

from __future__ import annotations

from synapse.server_options import KNOWN_KEYWORDS

ALL = sorted(KNOWN_KEYWORDS)
# Values HAProxy 2.6 refuses (`haproxy -c`): a record carrying one of them would make every
# candidate config invalid, blocking every structural change while it is registered.
OUT_OF_RANGE = [
    "rise 0", "fall 00", "rise 2147483648", "inter 0", "fastinter 0ms", "downinter 0s",
    "inter 25d", "inter 2147483648", "slowstart 999999999d", "weight 257",
    "weight \u0661\u0660", "maxconn \u0665", "inter 1\u0661s",  # non-ASCII digits
]  # fmt: skip
# Shapes that try to smuggle a second directive or a comment through an allowed keyword.
SMUGGLING = [
    "cookie a#b", "cookie 'a b'", 'cookie "x', "cookie a;b", "cookie a\\", "weight 1#",
    "backup;server x 1.2.3.4:1", "cookie x\\ server", "inter 1s\\", "weight 5 # comment",
]  # fmt: skip
