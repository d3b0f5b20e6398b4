"""Transports and the async link: TCP, pty serial, pyserial socket://, dial-in, drops and failures."""

from __future__ import annotations

import asyncio
import os
import threading
import tty

import pytest

from headend.link.session import Request
from headend.transports import FrontEnd, LinkSettings, LinkUnreachable, NoAnswer, parse_link_url
from tests.headend.responder import Responder

A1, A2, A3 = "000000000001", "000000000002", "000000000003"
READ = (0x00010000).to_bytes(4, "little")
FAST = LinkSettings(timeout=0.3, retries=2, backoff=0.05, connect_timeout=1.0, reconnect_backoff=0.05)


def run(coro):
    return asyncio.run(coro)


async def start(responder: Responder):
    server = await asyncio.start_server(responder.serve_tcp, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_parse_link_urls():
    s = parse_link_url("serial:///dev/ttyUSB0?baud=2400&parity=E")
    assert (s.kind, s.device, s.baudrate, s.parity) == ("serial", "/dev/ttyUSB0", 2400, "E")
    s = parse_link_url("tcp://10.0.0.5:8899")
    assert (s.kind, s.host, s.port) == ("tcp", "10.0.0.5", 8899)
    s = parse_link_url("socket://gw:4001?baud=9600&parity=N&logging=debug")
    assert (s.kind, s.device, s.baudrate, s.parity) == ("serial", "socket://gw:4001?logging=debug", 9600, "N")
    s = parse_link_url("rfc2217://gw:2217")
    assert s.device == "rfc2217://gw:2217" and s.baudrate == 2400 and s.parity == "E"
    assert parse_link_url("/dev/ttyS0").device == "/dev/ttyS0"
    assert parse_link_url("listen://0.0.0.0:9000").kind == "listen"
    for bad in ("tcp://host", "ftp://x:1", "serial://", "serial:///dev/x?baud=fast"):
        with pytest.raises(ValueError, match="link"):
            parse_link_url(bad)


def test_tcp_bus_with_several_meters_one_request_at_a_time():
    async def main():
        resp = Responder([A1, A2, A3], delay=0.002)
        server, port = await start(resp)
        fe = FrontEnd(FAST)
        url = f"tcp://127.0.0.1:{port}"
        replies = await asyncio.gather(*(fe.request(url, Request(a, 0x11, READ)) for a in [A1, A2, A3] * 5))
        await fe.close()
        server.close()
        return resp, replies

    resp, replies = run(main())
    assert [r.frame.address for r in replies] == [A1, A2, A3] * 5
    assert all(r.frame.data[:4] == READ for r in replies)
    assert resp.max_outstanding == 1 and len(resp.requests) == 15


def test_many_links_at_once():
    async def main():
        servers = [await start(Responder([A1], delay=0.05)) for _ in range(5)]
        fe = FrontEnd(FAST)
        t0 = asyncio.get_running_loop().time()
        replies = await asyncio.gather(*(fe.request(f"tcp://127.0.0.1:{p}", Request(A1, 0x11, READ)) for _, p in servers))
        elapsed = asyncio.get_running_loop().time() - t0
        await fe.close()
        for s, _ in servers:
            s.close()
        return replies, elapsed

    replies, elapsed = run(main())
    assert len(replies) == 5
    # five buses answered in parallel, not one after another (5 x 0.05 s)
    assert elapsed < 0.2


def test_dropped_reply_is_retried():
    async def main():
        resp = Responder([A1], drop_first=1)
        server, port = await start(resp)
        fe = FrontEnd(FAST)
        r = await fe.request(f"tcp://127.0.0.1:{port}", Request(A1, 0x11, READ))
        await fe.close()
        server.close()
        return resp, r

    resp, r = run(main())
    assert r.attempts == 2 and len(resp.requests) == 2
    assert resp.requests[0] == resp.requests[1]


def test_garbage_answer_ends_in_no_answer_with_counts():
    async def main():
        resp = Responder([A1], garbage=True)
        server, port = await start(resp)
        fe = FrontEnd(FAST)
        url = f"tcp://127.0.0.1:{port}"
        with pytest.raises(NoAnswer, match=f"no answer from meter {A1} after 3 attempt"):
            await fe.request(url, Request(A1, 0x11, READ))
        link = await fe.link_for(url, A1)
        await fe.close()
        server.close()
        return link

    link = run(main())
    assert link.session.discarded > 0 and link.session.stats.failures == 1


def test_unreachable_link_names_the_link():
    async def main():
        server, port = await start(Responder([A1]))
        server.close()
        await server.wait_closed()
        fe = FrontEnd(FAST)
        with pytest.raises(LinkUnreachable, match=f"tcp://127.0.0.1:{port}"):
            await fe.request(f"tcp://127.0.0.1:{port}", Request(A1, 0x11, READ))
        await fe.close()

    run(main())


def test_link_that_drops_is_reopened():
    async def main():
        resp = Responder([A1])
        conns = []

        async def serve(reader, writer):
            conns.append(writer)
            await resp.serve_tcp(reader, writer)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        fe = FrontEnd(FAST)
        await fe.request(url, Request(A1, 0x11, READ))
        conns[0].close()  # the DTU hangs up
        await asyncio.sleep(0.05)
        r = await fe.request(url, Request(A1, 0x11, READ))
        link = await fe.link_for(url, A1)
        await fe.close()
        server.close()
        return r, link, conns

    r, link, conns = run(main())
    assert r.frame.address == A1 and len(conns) == 2 and link.reconnects == 1


def test_serial_over_pty():
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    stop = threading.Event()
    resp = Responder([A1, A2])
    resp.serve_fd(master, stop)
    url = f"serial://{os.ttyname(slave)}?baud=2400&parity=E"

    async def main():
        fe = FrontEnd(FAST)
        out = [await fe.request(url, Request(a, 0x11, READ)) for a in (A1, A2, A1)]
        await fe.close()
        return out

    try:
        out = run(main())
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    assert [r.frame.address for r in out] == [A1, A2, A1]


def test_pyserial_socket_url():
    async def main():
        server, port = await start(Responder([A2]))
        fe = FrontEnd(FAST)
        r = await fe.request(f"socket://127.0.0.1:{port}", Request(A2, 0x11, READ))
        await fe.close()
        server.close()
        return r

    assert run(main()).frame.address == A2


def test_missing_serial_device_is_unreachable():
    async def main():
        fe = FrontEnd(FAST)
        with pytest.raises(LinkUnreachable, match="/dev/ttyNOPE"):
            await fe.request("serial:///dev/ttyNOPE?baud=2400", Request(A1, 0x11, READ))
        await fe.close()

    run(main())


def test_dial_in_meter_is_identified_and_reached():
    async def main():
        fe = FrontEnd(FAST)
        url = "listen://127.0.0.1:0"
        port = await fe.listen(url)
        resp = Responder([A3])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the meter dials in
        task = asyncio.create_task(resp.serve_tcp(reader, writer))
        r = await fe.request(url, Request(A3, 0x11, READ))
        with pytest.raises(LinkUnreachable, match=f"meter {A1} has not dialled in"):
            await fe.request(url, Request(A1, 0x11, READ))
        await fe.close()
        task.cancel()
        return r

    fe_settings = FAST
    assert fe_settings.connect_timeout == 1.0
    assert run(main()).frame.address == A3


def test_late_reply_to_a_given_up_request_is_not_taken_for_the_next_answer():
    async def main():
        resp = Responder([A1], delay=0.4)  # answers after the 0.3 s timeout
        server, port = await start(resp)
        fe = FrontEnd(LinkSettings(timeout=0.3, retries=0, connect_timeout=1.0))
        url = f"tcp://127.0.0.1:{port}"
        with pytest.raises(NoAnswer):
            await fe.request(url, Request(A1, 0x11, READ))
        other = (0x00900200).to_bytes(4, "little")
        r = await fe.request(url, Request(A1, 0x11, other, timeout=2.0))
        link = await fe.link_for(url, A1)
        await fe.close()
        server.close()
        return r, link

    r, link = run(main())
    assert r.frame.data[:4] == (0x00900200).to_bytes(4, "little")
    assert link.session.stats.stray >= 1


def test_cancelled_request_frees_the_bus_and_callbacks_run_in_order():
    async def main():
        resp = Responder([A1, A2], delay=0.2)
        server, port = await start(resp)
        fe = FrontEnd(FAST)
        url = f"tcp://127.0.0.1:{port}"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fe.request(url, Request(A1, 0x11, READ, timeout=2.0)), 0.05)
        link = fe.link_nowait(url)
        order = []
        done = asyncio.Event()

        def cb(tag):
            def f(reply, exc):
                order.append((tag, reply.frame.address if reply else repr(exc)))
                if len(order) == 3:
                    done.set()
            return f

        for tag, a in (("x", A2), ("y", A1), ("z", A2)):
            link.submit(Request(a, 0x11, READ, timeout=2.0), cb(tag))
        await asyncio.wait_for(done.wait(), 5)
        await fe.close()
        server.close()
        return order, link

    order, link = run(main())
    assert order == [("x", A2), ("y", A1), ("z", A2)]
    assert link.session.stats.stray >= 1  # the cancelled request's late answer was not taken for x's


def test_one_job_resubmitted_from_its_callback_reads_in_order():
    """A read cycle's way: one Job per meter, handed back to the link from its own done()."""
    from headend.transports import Job

    class Reads(Job):
        __slots__ = ("link", "todo", "got", "finished")

        def done(self, reply, exc):  # noqa: D102
            self.got.append(reply.frame.data[:4] if reply else repr(exc))
            if self.todo:
                self.request = self.todo.pop(0)
                self.link.submit_job(self)
            else:
                self.finished.set()

    async def main():
        resp = Responder([A1], delay=0.001)
        server, port = await start(resp)
        fe = FrontEnd(FAST)
        link = fe.link_nowait(f"tcp://127.0.0.1:{port}")
        dis = [(0x00010000 + k * 0x100).to_bytes(4, "little") for k in range(5)]
        job = Reads.__new__(Reads)
        job.link, job.got, job.finished = link, [], asyncio.Event()
        job.todo = [Request(A1, 0x11, d) for d in dis[1:]]
        job.request = Request(A1, 0x11, dis[0])
        link.submit_job(job)
        await asyncio.wait_for(job.finished.wait(), 5)
        await fe.close()
        server.close()
        return job.got, dis, resp, link

    got, dis, resp, link = run(main())
    assert got == dis  # each answer matched to its own DI, in order
    assert resp.max_outstanding == 1 and link.session.stats.requests == 5
