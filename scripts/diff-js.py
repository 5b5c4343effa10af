#!/usr/bin/env python3
"""Differential run of JetStream against a reference server: the same random operations on
both, and the answers and the state after every step compared; prints the first difference
of each trial with the steps before it. Started by scripts/diff-js, which runs both servers.

A difference is something to look at, not a failure: nats-server 2.9.10 (Debian's) differs
from 2.10, which Junction follows, in known ways (see the session notes of issue 13).

Usage: diff-js.py JUNCTION_URL REFERENCE_URL streams|consumers FIRST_SEED LAST_SEED OPS
"""

import asyncio
import json
import os
import random
import sys

import nats
from nats.js.errors import APIError, NotFoundError

CONFIGS = [
    dict(name="M", subjects=["d.>"], max_msgs_per_subject=2, max_bytes=2000, storage="memory"),
    dict(name="MI", subjects=["d.>"], retention="interest", storage="memory", max_msgs=20),
    dict(name="L", subjects=["d.>"], max_msgs_per_subject=2, max_msgs=40),
    dict(name="L2", subjects=["d.>"], max_msgs=30, discard="new"),
    dict(name="I", subjects=["d.>"], retention="interest"),
    dict(name="W", subjects=["d.>"], retention="workqueue"),
    dict(name="R", subjects=["d.>"], max_msgs_per_subject=1, allow_rollup_hdrs=True, max_bytes=3000),
]

async def run_stream(url, cfg, seed, nops):
    rnd = random.Random(seed)
    nc = await nats.connect(url)
    js = nc.jetstream()
    log = []
    await js.add_stream(**cfg)
    subs = {}
    if cfg.get("retention") in ("interest", "workqueue"):
        subs["a"] = await js.pull_subscribe("d.a", durable="ca", stream=cfg["name"])
        if cfg.get("retention") == "interest":
            subs["all"] = await js.pull_subscribe("d.*", durable="call", stream=cfg["name"])
        else:
            subs["b"] = await js.pull_subscribe("d.b", durable="cb", stream=cfg["name"])
    for i in range(nops):
        op = rnd.random()
        subj = "d." + rnd.choice("abcd")
        try:
            if op < 0.5:
                hdrs = None
                if cfg.get("allow_rollup_hdrs") and rnd.random() < 0.1:
                    hdrs = {"Nats-Rollup": rnd.choice(["sub", "all"])}
                ack = await js.publish(subj, b"x" * rnd.randint(0, 200), headers=hdrs)
                r = ("pub", ack.seq, subj, bool(hdrs))
            elif op < 0.6:
                info = await js.stream_info(cfg["name"])
                seq = rnd.randint(max(1, info.state.first_seq - 2), info.state.last_seq + 2)
                ok = await js.delete_msg(cfg["name"], seq)
                r = ("del", seq, ok)
            elif op < 0.65:
                kw = rnd.choice([{}, {"subject": subj}, {"keep": rnd.randint(0, 5)}, {"subject": subj, "keep": 1}, {"seq": rnd.randint(1, 200)}])
                body = {}
                if "subject" in kw: body["filter"] = kw["subject"]
                if "keep" in kw: body["keep"] = kw["keep"]
                if "seq" in kw: body["seq"] = kw["seq"]
                resp = json.loads((await nc.request(f"$JS.API.STREAM.PURGE.{cfg['name']}", json.dumps(body).encode(), timeout=3)).data)
                r = ("purge", body, resp.get("purged"), resp.get("error", {}).get("err_code"))
            elif op < 0.85 and subs:
                k = rnd.choice(list(subs))
                try:
                    msgs = await subs[k].fetch(rnd.randint(1, 3), timeout=1)
                except Exception:
                    msgs = []
                got = []
                for m in msgs:
                    got.append((m.subject, m.metadata.sequence.stream))
                    await m.ack_sync()
                r = ("fetch", k, got)
            else:
                info = await js.stream_info(cfg["name"])
                seq = rnd.randint(max(1, info.state.first_seq), info.state.last_seq + 1)
                try:
                    m = await js.get_msg(cfg["name"], seq)
                    r = ("get", seq, m.subject)
                except NotFoundError:
                    r = ("get", seq, None)
        except APIError as e:
            r = ("err", e.err_code)
        except Exception as e:
            r = ("exc", type(e).__name__)
        await asyncio.sleep(0.002)
        info = await js.stream_info(cfg["name"])
        s = info.state
        log.append((i, r, (s.messages, s.bytes, s.first_seq, s.last_seq, s.num_deleted or 0)))
    await js.delete_stream(cfg["name"])
    await nc.close()
    return log

async def fetch_nowait(nc, stream, cons, batch):
    inbox = nc.new_inbox()
    got = []
    done = asyncio.Event()
    async def cb(m):
        if m.headers and m.headers.get("Status"):
            done.set(); return
        got.append(m)
        if len(got) >= batch: done.set()
    sub = await nc.subscribe(inbox, cb=cb)
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{cons}", json.dumps({"batch": batch, "no_wait": True}).encode(), reply=inbox)
    try:
        await asyncio.wait_for(done.wait(), 2)
    except asyncio.TimeoutError:
        got.append("TIMEOUT")
    await sub.unsubscribe()
    return got

async def run_consumer(url, seed, nops):
    rnd = random.Random(seed)
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"C{seed}"
    await js.add_stream(name=name, subjects=[f"{name}.>"], max_msgs_per_subject=rnd.choice([-1, -1, 3]))
    for i in range(rnd.randint(5, 30)):
        await js.publish(f"{name}.{rnd.choice('abc')}", b"x")
    cfg = {"durable_name": "d", "ack_policy": rnd.choice(["explicit", "explicit", "all", "none"]), "ack_wait": 30_000_000_000,
           "deliver_policy": rnd.choice(["all", "last", "new", "by_start_sequence", "last_per_subject"])}
    if cfg["deliver_policy"] == "by_start_sequence":
        cfg["opt_start_seq"] = rnd.randint(1, 40)
    if rnd.random() < 0.5:
        cfg["filter_subject"] = f"{name}.{rnd.choice('ab')}"
    if rnd.random() < 0.3:
        cfg["max_ack_pending"] = rnd.randint(1, 5)
    r = json.loads((await nc.request(f"$JS.API.CONSUMER.DURABLE.CREATE.{name}.d", json.dumps({"stream_name": name, "config": cfg}).encode())).data)
    log = [("create", cfg, r.get("error", {}).get("err_code"))]
    if "error" in r:
        await js.delete_stream(name); await nc.close(); return log
    for i in range(nops):
        op = rnd.random()
        if op < 0.35:
            subj = f"{name}.{rnd.choice('abc')}"
            ack = await js.publish(subj, b"x")
            res = ("pub", ack.seq, subj)
        elif op < 0.75:
            msgs = await fetch_nowait(nc, name, "d", rnd.randint(1, 4))
            res = ["fetch"]
            for m in msgs:
                if m == "TIMEOUT":
                    res.append("T"); continue
                a = rnd.choice(["+ACK", "+ACK", "+TERM", None])
                if cfg["ack_policy"] == "none": a = None
                if a: await nc.request(m.reply, a.encode(), timeout=2) if False else await m.respond(a.encode())
                res.append((m.metadata.sequence.stream, m.metadata.sequence.consumer, m.metadata.num_pending, a))
            res = tuple(res)
        elif op < 0.85:
            seq = rnd.randint(1, 60)
            r = json.loads((await nc.request(f"$JS.API.STREAM.MSG.DELETE.{name}", json.dumps({"seq": seq, "no_erase": True}).encode())).data)
            res = ("del", seq, r.get("success"))
        else:
            body = rnd.choice([{}, {"filter": f"{name}.a"}, {"keep": 2}])
            r = json.loads((await nc.request(f"$JS.API.STREAM.PURGE.{name}", json.dumps(body).encode())).data)
            res = ("purge", body, r.get("purged"))
        await asyncio.sleep(0.05)
        ci = await js.consumer_info(name, "d")
        log.append((i, res, (ci.delivered.consumer_seq, ci.delivered.stream_seq, ci.ack_floor.consumer_seq, ci.ack_floor.stream_seq, ci.num_pending, ci.num_ack_pending, ci.num_redelivered)))
    await js.delete_stream(name)
    await nc.close()
    return log


def report(name, a, b, ctx):
    for x, y in zip(a, b):
        if x != y:
            print(name, "DIFF at step", x[0])
            print("  junction :", x)
            print("  reference:", y)
            for z in a:
                if isinstance(z[0], int) and x[0] - ctx <= z[0] < x[0]:
                    print("   before:", z)
            return
    print(name, "same over", len(a), "steps")


async def main():
    a_url, b_url, mode = sys.argv[1:4]
    first, last, nops = (int(v) for v in sys.argv[4:7])
    ctx = int(os.environ.get("CTX", "3"))
    for seed in range(first, last + 1):
        if mode == "streams":
            for ci, cfg in enumerate(CONFIGS):
                cfg = dict(cfg)
                cfg["name"] = cfg["name"] + str(seed)
                a = await run_stream(a_url, cfg, seed * 100 + ci, nops)
                b = await run_stream(b_url, cfg, seed * 100 + ci, nops)
                report(cfg["name"], a, b, ctx)
        else:
            a = await run_consumer(a_url, seed, nops)
            b = await run_consumer(b_url, seed, nops)
            if a[0] != b[0]:
                print(seed, "create differs:", a[0], "against", b[0])
                continue
            report(f"{seed} {a[0][1]}", a[1:], b[1:], ctx)


asyncio.run(main())
