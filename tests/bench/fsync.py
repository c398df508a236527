#!/usr/bin/env python3
"""Cost of one durable append on this disk, the figure behind the raft log's format.

  python3 tests/bench/fsync.py [DIR]   (default /var/tmp; not tmpfs)

Times N rounds of each pattern, p50 and p99:
  - one 600-byte record written into a preallocated file, then fdatasync
    (what src/discovery/server/raft/log_store.rs does per batch);
  - the same record appended to a file that grows, then fdatasync;
  - 12 and 3 random 4 KiB pages, then fdatasync (a B-tree store's commit
    rewrites about a dozen pages: redb did for each raft append).
"""
import os
import random
import sys
import tempfile
import time

N = 2000


def bench(name, fn):
    ts = []
    for i in range(N):
        t = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"{name:44} p50 {ts[N // 2] * 1e6:6.0f} us   p99 {ts[int(N * 0.99)] * 1e6:6.0f} us")


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp"
    with tempfile.TemporaryDirectory(dir=base) as d:
        record = b"x" * 600
        page = b"y" * 4096
        pre = os.open(os.path.join(d, "prealloc"), os.O_RDWR | os.O_CREAT)
        os.posix_fallocate(pre, 0, 64 << 20)
        os.fsync(pre)
        grow = os.open(os.path.join(d, "grow"), os.O_RDWR | os.O_CREAT)
        bench("600 B into a preallocated file + fdatasync",
              lambda i: (os.pwrite(pre, record, i * 600), os.fdatasync(pre)))
        bench("600 B appended, file grows + fdatasync",
              lambda i: (os.pwrite(grow, record, i * 600), os.fdatasync(grow)))
        for pages in (12, 3):
            bench(f"{pages} random 4 KiB pages + fdatasync",
                  lambda i, n=pages: ([os.pwrite(pre, page, random.randrange(16000) * 4096)
                                       for _ in range(n)], os.fdatasync(pre)))
        os.close(pre)
        os.close(grow)


if __name__ == "__main__":
    main()
