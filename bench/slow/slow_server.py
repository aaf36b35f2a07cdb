"""A slow HTTP target server for bench/slow/run.sh: answers every request
200 "ok" after DELAY seconds, and logs each request's arrival as
"<unix time> <path>" to LOG (buffered, flushed every 0.25 s and at exit).
Standard library only (asyncio): thousands of requests can wait at once.
HTTP/1.1 keep-alive is honoured, "Connection: close" and HTTP/1.0 close.

Usage: python3 slow_server.py PORT LOG [DELAY]   (SIGTERM/SIGINT to stop)
"""
import asyncio
import resource
import signal
import sys
import time

PORT = int(sys.argv[1])
LOG = sys.argv[2]
DELAY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"

lines = []


async def handle(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            arrived = time.time()
            request_line, _, headers = head.partition(b"\r\n")
            parts = request_line.split()
            path = parts[1].decode("latin-1") if len(parts) > 1 else "?"
            lines.append(f"{arrived:.6f} {path}\n")
            lowered = headers.lower()
            close = b"connection: close" in lowered or (len(parts) > 2 and parts[2] == b"HTTP/1.0")
            length = 0
            for header in lowered.split(b"\r\n"):
                if header.startswith(b"content-length:"):
                    length = int(header.split(b":", 1)[1].strip() or 0)
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(DELAY - (time.time() - arrived))
            writer.write(ANSWER + (b"Connection: close\r\n\r\nok\n" if close else b"\r\nok\n"))
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def flush(out):
    while True:
        await asyncio.sleep(0.25)
        if lines:
            out.write("".join(lines))
            lines.clear()
            out.flush()


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open(LOG, "a", buffering=1 << 16) as out:
        server = await asyncio.start_server(handle, "127.0.0.1", PORT, backlog=4096, reuse_address=True)
        flusher = asyncio.create_task(flush(out))
        await stop.wait()
        flusher.cancel()
        server.close()
        out.write("".join(lines))


asyncio.run(main())
