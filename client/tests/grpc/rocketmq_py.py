"""Drives FerroMQ's RocketMQ 5 gRPC endpoint with the official Python client
(rocketmq-python-client, pinned in scripts/test-deps) for client/tests/grpc_python.rs.

Usage: rocketmq_py.py COMMAND JSON_ARGS. Prints one JSON object on its last stdout line;
errors raised by the client are reported in it (class, code, text), never swallowed.
"""

import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression,
                      Message, MessageListener, Producer, PushConsumer, SimpleConsumer,
                      TransactionChecker, TransactionResolution)


def config(a):
    return ClientConfiguration(a["endpoint"], Credentials(), request_timeout=5)


def as_json(m):
    return {
        "id": m.message_id,
        "topic": m.topic,
        "body": m.body.decode(),
        "tag": m.tag,
        "keys": sorted(m.keys),
        "properties": dict(m.properties),
        "attempt": m.delivery_attempt,
        "corrupted": m.corrupted,
        "message_group": m.message_group,
        "delivery_timestamp": m.delivery_timestamp,
        "handle": m.receipt_handle,
        "received_at": int(time.time() * 1000),
    }


def error(e):
    return {"class": type(e).__name__, "code": getattr(e, "code", None), "text": str(e)}


def new_message(a, body):
    m = Message()
    m.topic = a["topic"]
    m.body = body.encode()
    if a.get("tag"):
        m.tag = a["tag"]
    for k in a.get("keys", []):
        m.keys = k
    for k, v in a.get("props", {}).items():
        m.add_property(k, v)
    if a.get("message_group"):
        m.message_group = a["message_group"]
    if a.get("delay_s"):
        m.delivery_timestamp = int(time.time()) + a["delay_s"]
    return m


def produce(a):
    p = Producer(config(a), (a["topic"],))
    p.startup()
    sent, errors = [], []
    try:
        for body in a["bodies"]:
            try:
                r = p.send(new_message(a, body))
                sent.append({"id": r.message_id, "offset": r.offset,
                             "recall_handle": getattr(r, "recall_handle", None)})
            except Exception as e:  # reported to the Rust test, which asserts on it
                errors.append(error(e))
    finally:
        p.shutdown()
    return {"sent": sent, "errors": errors}


def simple(a):
    sub = {a["topic"]: FilterExpression(a.get("filter", "*"))}
    c = SimpleConsumer(config(a), a["group"], sub, await_duration=a.get("await_s", 2))
    c.startup()
    return c


def receive(a):
    """Receives until `want` messages came or `polls` polls ran; acks each unless told not to."""
    c = simple(a)
    got, empty, empty_in_a_row = [], 0, 0
    try:
        for _ in range(a.get("polls", 10)):
            if len(got) >= a["want"] or empty_in_a_row >= a.get("max_empty", 1000):
                break
            batch = c.receive(a.get("max", 16), a.get("invisible_s", 15))
            empty_in_a_row = 0 if batch else empty_in_a_row + 1
            if not batch:
                empty += 1
            for m in batch:
                got.append(as_json(m))
                if a.get("ack", True):
                    c.ack(m)
    finally:
        c.shutdown()
    return {"messages": got, "empty_polls": empty}


def redeliver(a):
    """A message left unacked comes back with attempt 2; its first handle is then refused."""
    c = simple(a)
    out = {}
    try:
        first = []
        for _ in range(10):
            first = c.receive(1, 1)
            if first:
                break
        m = first[0]
        out["first"] = as_json(m)
        old_handle = m.receipt_handle
        second = []
        for _ in range(20):
            second = c.receive(1, 15)
            if second:
                break
        m2 = second[0]
        out["second"] = as_json(m2)
        m2.receipt_handle = old_handle
        try:
            c.ack(m2)
            out["stale_ack"] = None
        except Exception as e:
            out["stale_ack"] = error(e)
        m2.receipt_handle = out["second"]["handle"]
        c.ack(m2)
        out["acked"] = True
    finally:
        c.shutdown()
    return out


def bad_handle(a):
    c = simple(a)
    out = {}
    try:
        got = []
        for _ in range(10):
            got = c.receive(1, 15)
            if got:
                break
        m = got[0]
        m.receipt_handle = "not-a-receipt-handle"
        try:
            c.ack(m)
            out["error"] = None
        except Exception as e:
            out["error"] = error(e)
    finally:
        c.shutdown()
    return out


def push(a):
    """A listener that fails each message `fail_times` times (or always), recording attempts."""
    attempts, lock, done = [], threading.Lock(), threading.Event()

    class Listener(MessageListener):
        def consume(self, m):
            with lock:
                attempts.append({"body": m.body.decode(), "attempt": m.delivery_attempt,
                                 "at": time.time()})
                if len(attempts) >= a["stop_after"]:
                    done.set()
            fail = a["fail_times"] < 0 or m.delivery_attempt <= a["fail_times"]
            return ConsumeResult.FAILURE if fail else ConsumeResult.SUCCESS

    pc = PushConsumer(config(a), a["group"], Listener(), {a["topic"]: FilterExpression("*")})
    pc.startup()
    try:
        done.wait(a.get("wait_s", 60))
        # Let the last outcome (ack or nack) reach the broker.
        time.sleep(1)
    finally:
        pc.shutdown()
    return {"attempts": attempts}


def recall(a):
    p = Producer(config(a), (a["topic"],))
    p.startup()
    try:
        return {"message_id": p.recall_message(a["topic"], a["handle"])}
    except Exception as e:
        return {"error": error(e)}
    finally:
        p.shutdown()


def transaction(a):
    """Commits one transaction, rolls one back and leaves one open for the broker's
    check-back, which the checker answers with COMMIT."""
    checked = []
    asked = threading.Event()

    class Checker(TransactionChecker):
        def check(self, m):
            checked.append({"body": m.body.decode(), "corrupted": m.corrupted})
            asked.set()
            return TransactionResolution.COMMIT

    p = Producer(config(a), (a["topic"],), Checker())
    p.startup()
    try:
        for body, end in (("committed", "commit"), ("rolled-back", "rollback"), ("orphan", None)):
            t = p.begin_transaction()
            p.send(new_message(a, body), t)
            if end == "commit":
                t.commit()
            elif end == "rollback":
                t.rollback()
        asked.wait(a.get("wait_s", 60))
        # Let the checker's EndTransaction reach the broker.
        time.sleep(1)
    finally:
        p.shutdown()
    return {"checked": checked}


COMMANDS = {"produce": produce, "receive": receive, "redeliver": redeliver,
            "bad_handle": bad_handle, "push": push,
            "recall": recall, "transaction": transaction}

if __name__ == "__main__":
    result = COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))
    sys.stdout.flush()
    print(json.dumps(result))
