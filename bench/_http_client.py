"""Helper process for bench/endpoints.py: sequential GETs over one keep-alive connection.

Usage: ``python -m bench._http_client PORT PATH N [gzip]``; prints the mean seconds per
request (after 10 unmeasured ones) and the body size, as JSON.
"""

from __future__ import annotations

import http.client
import json
import sys
import time


def main() -> int:
    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    headers = {"Accept-Encoding": "gzip"} if sys.argv[4:] == ["gzip"] else {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    size = 0

    def get() -> int:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"{path}: HTTP {resp.status}")
        return len(body)

    for _ in range(10):
        size = get()
    start = time.perf_counter()
    for _ in range(n):
        get()
    took = time.perf_counter() - start
    conn.close()
    print(json.dumps({"seconds": took / n, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
