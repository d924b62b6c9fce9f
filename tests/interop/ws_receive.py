#!/usr/bin/python3
"""WebSocket receiver for tests/websocket.rs (python3-websockets).

Usage: ws_receive.py URL SIZE COUNT

Receives COUNT binary messages; each must be one whole raw test frame of
SIZE bytes (number, its complement, the pattern, the number again). Then
pings (and waits for the pong) and closes with 1000. Prints one line per
fact: FRAMES first last, GAPS n, PONG, CLOSED code.
"""
import asyncio
import struct
import sys

import websockets


def check(frame, size):
    if len(frame) != size:
        raise SystemExit(f"message of {len(frame)} bytes, not {size}")
    n, inv = struct.unpack(">QQ", frame[:16])
    if inv != (~n) & ((1 << 64) - 1) or struct.unpack(">Q", frame[-8:])[0] != n:
        raise SystemExit(f"torn frame claiming {n}")
    pattern = bytes((i * 13 + 5) % 251 for i in range(size))
    if frame[16:size - 8] != pattern[16:size - 8]:
        raise SystemExit(f"frame {n}: bad pattern")
    return n


async def main():
    url, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        nums = []
        while len(nums) < count:
            m = await asyncio.wait_for(ws.recv(), 20)
            if not isinstance(m, bytes):
                raise SystemExit(f"a text message: {m!r}")
            nums.append(check(m, size))
        gaps = sum(1 for a, b in zip(nums, nums[1:]) if b != a + 1)
        print(f"FRAMES {nums[0]} {nums[-1]}", flush=True)
        print(f"GAPS {gaps}", flush=True)
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 20)
        print("PONG", flush=True)
        await ws.close(1000)
        print(f"CLOSED {ws.close_code}", flush=True)


asyncio.run(main())
