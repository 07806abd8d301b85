"""Memory a batch of worst-case records holds after decoding (issue 10, defect 5).

A 64 KiB record of many small JSON objects in an extra field decodes to far more memory
than its bytes. The batcher holds up to ``max_batch_size`` decoded records, so this prints
the memory one full batch of them holds (tracemalloc), next to the bytes received.

    PYTHONPATH=. .venv/bin/python benchmarks/record_memory.py
"""

from __future__ import annotations

import tracemalloc

import orjson

from worker.core.codec import decode

BATCH = 256  # batching.max_batch_size default
LIMIT = 65536  # limits.max_record_bytes default


def worst_record(i: int) -> bytes:
    head = b'{"id": "w%04d", "values": ' % i + orjson.dumps([0.5] * 140) + b', "m": ['
    count = (LIMIT - len(head) - 2) // 3
    return head + b"{}," * (count - 1) + b"{}]}"


def main() -> None:
    raw = [worst_record(i) for i in range(BATCH)]
    tracemalloc.start()
    held = [decode(r, b"k", "t", 0, i, 0, 140, LIMIT) for i, r in enumerate(raw)]
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    received = sum(map(len, raw))
    kinds = {type(h).__name__ for h in held}
    print(f"records            {BATCH} x {len(raw[0])} bytes ({received / 2**20:.1f} MiB received)")
    print(f"decoded as         {', '.join(sorted(kinds))}")
    print(f"held after decode  {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB)")
    print(f"held / received    {current / received:.2f}")


if __name__ == "__main__":
    main()
