// Drives FerroMQ's RocketMQ 5 gRPC endpoint with the official Node.js client
// (rocketmq-client-nodejs, pinned in package.json) for client/tests/grpc_node.rs.
//
// Usage: node rocketmq_node.js COMMAND JSON_ARGS. Prints one JSON object on its last
// stdout line; client errors are reported in it (name, code, message), never swallowed.
'use strict';

const { Producer, SimpleConsumer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');

// The client's own logging goes to stderr, so stdout carries only the result.
const logger = {
  info: (...a) => console.error('INFO', ...a),
  warn: (...a) => console.error('WARN', ...a),
  error: (...a) => console.error('ERROR', ...a),
  debug: () => {},
};

function base(a) {
  return { endpoints: a.endpoint, namespace: '', logger, requestTimeout: 5000 };
}

function asJson(m) {
  return {
    id: m.messageId,
    topic: m.topic,
    body: m.body.toString(),
    tag: m.tag ?? null,
    keys: [...m.keys].sort(),
    properties: Object.fromEntries(m.properties),
    attempt: m.deliveryAttempt,
    corrupted: m.corrupted === true,
    message_group: m.messageGroup ?? null,
  };
}

function error(e) {
  return { name: e.name, code: e.code ?? null, text: String(e.message ?? e) };
}

// Node's startup() may wait for ever when the server never answers; bound every call.
function within(ms, p, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

async function produce(a) {
  const p = new Producer({ ...base(a), topics: [a.topic] });
  await within(30000, p.startup(), 'producer startup');
  const sent = [];
  const errors = [];
  try {
    for (const body of a.bodies) {
      const msg = { topic: a.topic, body: Buffer.from(body) };
      if (a.tag) msg.tag = a.tag;
      if (a.keys) msg.keys = a.keys;
      if (a.props) msg.properties = new Map(Object.entries(a.props));
      if (a.message_group) msg.messageGroup = a.message_group;
      try {
        const r = await within(30000, p.send(msg), 'send');
        sent.push({ id: r.messageId, offset: Number(r.offset ?? 0) });
      } catch (e) {
        errors.push(error(e));
      }
    }
  } finally {
    await within(30000, p.shutdown(), 'producer shutdown');
  }
  return { sent, errors };
}

async function receive(a) {
  const c = new SimpleConsumer({
    ...base(a),
    consumerGroup: a.group,
    subscriptions: new Map([[a.topic, a.filter ?? '*']]),
    awaitDuration: (a.await_s ?? 2) * 1000,
  });
  await within(30000, c.startup(), 'simple consumer startup');
  const got = [];
  let empty = 0;
  try {
    for (let i = 0; i < (a.polls ?? 10) && got.length < a.want; i++) {
      const batch = await within(60000, c.receive(a.max ?? 16, (a.invisible_s ?? 15) * 1000), 'receive');
      if (batch.length === 0) empty++;
      for (const m of batch) {
        got.push(asJson(m));
        if (a.ack ?? true) await within(30000, c.ack(m), 'ack');
      }
    }
  } finally {
    await within(30000, c.shutdown(), 'simple consumer shutdown');
  }
  return { messages: got, empty_polls: empty };
}

async function push(a) {
  const attempts = [];
  let finish;
  const done = new Promise(resolve => { finish = resolve; });
  const pc = new PushConsumer({
    ...base(a),
    consumerGroup: a.group,
    subscriptions: new Map([[a.topic, '*']]),
    messageListener: {
      async consume(m) {
        attempts.push({ body: m.body.toString(), attempt: m.deliveryAttempt });
        if (attempts.length >= a.stop_after) finish();
        const fail = a.fail_times < 0 || m.deliveryAttempt <= a.fail_times;
        return fail ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
      },
    },
  });
  await within(30000, pc.startup(), 'push consumer startup');
  try {
    await within((a.wait_s ?? 60) * 1000, done, 'push consumption').catch(() => {});
    // Let the last outcome (ack or nack) reach the broker.
    await new Promise(r => setTimeout(r, 1000));
  } finally {
    await within(30000, pc.shutdown(), 'push consumer shutdown');
  }
  return { attempts };
}

async function transaction(a) {
  const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');
  const checked = [];
  let asked;
  const wasAsked = new Promise(resolve => { asked = resolve; });
  const p = new Producer({
    ...base(a),
    topics: [a.topic],
    checker: {
      async check(m) {
        checked.push({ body: m.body.toString(), corrupted: m.corrupted === true });
        asked();
        return TransactionResolution.COMMIT;
      },
    },
  });
  await within(30000, p.startup(), 'producer startup');
  try {
    for (const [body, end] of [['committed', 'commit'], ['rolled-back', 'rollback'], ['orphan', null]]) {
      const t = p.beginTransaction();
      await within(30000, p.send({ topic: a.topic, body: Buffer.from(body) }, t), 'send');
      if (end === 'commit') await within(30000, t.commit(), 'commit');
      if (end === 'rollback') await within(30000, t.rollback(), 'rollback');
    }
    await within((a.wait_s ?? 60) * 1000, wasAsked, 'orphan check-back').catch(() => {});
    // Let the checker's EndTransaction reach the broker.
    await new Promise(r => setTimeout(r, 1000));
  } finally {
    await within(30000, p.shutdown(), 'producer shutdown');
  }
  return { checked };
}

const commands = { produce, receive, push, transaction };

commands[process.argv[2]](JSON.parse(process.argv[3])).then(
  result => {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
  },
  e => {
    console.error(e);
    process.exit(1);
  },
);
