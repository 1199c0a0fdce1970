#!/usr/bin/env python3
"""Memory per idle wss tunnel: opens N TLS WebSockets to 127.0.0.1:<port> (certificate not
checked), moves one small frame each way on each, waits 2 s, and prints how much the proxy
process <pid> grew (VmRSS) per tunnel. Standard library only.

usage: wss_hold.py N PORT PID [KEEP]   (KEEP: seconds to go on holding after the figure is
printed, e.g. for a heap profiler to look at the held tunnels; default 0)
"""
import asyncio, ssl, sys, base64, os
N=int(sys.argv[1]); port=int(sys.argv[2]); pid=int(sys.argv[3]); keep=float(sys.argv[4]) if len(sys.argv)>4 else 0
ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
def rss(): 
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
async def one():
    r,w=await asyncio.open_connection('127.0.0.1',port,ssl=ctx,server_hostname='localhost')
    key=base64.b64encode(os.urandom(16)).decode()
    w.write(f'GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n'.encode())
    await w.drain()
    head=await r.readuntil(b'\r\n\r\n')
    assert b' 101 ' in head.split(b'\r\n')[0], head[:100]
    # one masked text frame "hi" and its echo, so both sides have moved data once
    w.write(bytes([0x81,0x82,1,2,3,4,ord('h')^1,ord('i')^2])); await w.drain()
    await r.readexactly(4)
    return r,w
async def main():
    before=rss()
    conns=[]
    for i in range(0,N,100):
        conns+=await asyncio.gather(*[one() for _ in range(min(100,N-i))])
    await asyncio.sleep(2)
    after=rss()
    print(f'{N} idle wss tunnels: rss {before} -> {after} KiB, {(after-before)/N:.1f} KiB per tunnel', flush=True)
    await asyncio.sleep(keep)
asyncio.run(main())
