#!/usr/bin/python3
"""WebSocket publisher for tests/websocket.rs (python3-websockets).

Usage: ws_publish.py URL SIZE [START]

Connects to a /CHANNEL/KEY/publish URL and prints OPEN (or STATUS code when
the server refuses the handshake, and exits 2). Then each line read from
stdin is a number N: it sends the next N raw test frames of SIZE bytes
(numbered from START, default 0) as binary messages, one frame each, and
prints SENT total. At the end of stdin it closes with 1000 and prints
CLOSED code; if the server closes first it prints CLOSED code too.
"""
import asyncio
import struct
import sys

import websockets


def frame(n, size):
    pattern = bytes((i * 13 + 5) % 251 for i in range(size))
    mask = (1 << 64) - 1
    return struct.pack(">QQ", n, ~n & mask) + pattern[16:size - 8] + struct.pack(">Q", n)


async def main():
    url, size = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    start = n
    try:
        ws = await websockets.connect(url, max_size=None, ping_interval=None)
    except websockets.exceptions.InvalidStatusCode as e:
        print(f"STATUS {e.status_code}", flush=True)
        sys.exit(2)
    print("OPEN", flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            for _ in range(int(line)):
                await ws.send(frame(n, size))
                n += 1
            print(f"SENT {n - start}", flush=True)
        await ws.close(1000)
    except websockets.exceptions.ConnectionClosed:
        pass
    print(f"CLOSED {ws.close_code}", flush=True)


asyncio.run(main())
