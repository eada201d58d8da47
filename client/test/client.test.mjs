// WsLifecycleClient driven through a fake WebSocket, fake timers and a fake
// page: no network, no sleeping. Every timer fires only when a test advances
// the clock; `settle()` only lets pending promise callbacks (the async token
// provider) run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { StoppedError, WsLifecycleClient } from "../ws-lifecycle.js";

const JWT = "aaa.bbb.ccc";
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Timers that fire only on `advance`. */
function fakeClock() {
  let now = 0;
  let nextId = 1;
  const timers = new Map();
  return {
    setTimeout: (fn, ms) => (timers.set(nextId, { at: now + ms, fn }), nextId++),
    clearTimeout: (id) => timers.delete(id),
    /** Delays of the pending timers, from now, shortest first. */
    pending: () => [...timers.values()].map((t) => t.at - now).sort((a, b) => a - b),
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
    },
  };
}

/** A page: online/offline and visibility, with their events. */
function fakePage() {
  const listeners = { window: new Map(), document: new Map() };
  const target = (name) => ({
    addEventListener: (type, fn) => listeners[name].set(type, fn),
    removeEventListener: (type, fn) => listeners[name].get(type) === fn && listeners[name].delete(type),
  });
  const page = {
    ...target("window"),
    navigator: { onLine: true },
    document: { visibilityState: "visible", ...target("document") },
    location: { href: "http://app.example/chat" },
    goOnline() { page.navigator.onLine = true; listeners.window.get("online")?.({ type: "online" }); },
    show() { page.document.visibilityState = "visible"; listeners.document.get("visibilitychange")?.({ type: "visibilitychange" }); },
    listening: () => listeners.window.size + listeners.document.size,
  };
  return page;
}

/** A client over a fake WebSocket class; `sockets` lists every socket it opened. */
function harness(options = {}) {
  const sockets = [];
  const tokenCalls = [];
  const clock = fakeClock();
  class FakeSocket {
    constructor(url, protocols) {
      Object.assign(this, { url, protocols, readyState: 0, sent: [], closedWith: null, seq: 0 });
      sockets.push(this);
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code, reason) { this.closedWith = { code, reason }; this.readyState = 2; }
    // The server's side.
    open() { this.readyState = 1; this.onopen?.({}); }
    frame(fields) { this.seq += 1; this.onmessage?.({ data: JSON.stringify({ v: 1, seq: this.seq, ...fields }) }); }
    raw(data) { this.onmessage?.({ data }); }
    ready(fields = {}) { this.open(); this.frame({ type: "ready", connection_id: `c${sockets.indexOf(this)}`, user: "alice", ...fields }); }
    serverClose(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason, wasClean: code !== 1006 }); }
  }
  let n = 0;
  const client = new WsLifecycleClient({
    url: "wss://a.example/ws",
    token: async (ctx) => { tokenCalls.push(ctx); return options.tokens?.[n++] ?? JWT; },
    WebSocket: FakeSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    window: options.window ?? null,
    ...options.client,
  });
  const seen = [];
  client.on("*", (frame, type) => seen.push(type === "ready" ? "ready" : `${type}:${frame.off ?? frame.seq}`));
  const events = { state: [], resync: [], stopped: [], error: [] };
  client.on("client:state", (e) => events.state.push(e));
  client.on("client:resync", (e) => events.resync.push(e));
  client.on("client:stopped", (e) => events.stopped.push(e));
  client.on("client:error", (e) => events.error.push(e));
  const last = () => sockets[sockets.length - 1];
  /** connect(), let the token provider answer, and make the socket ready. */
  async function ready(fields) {
    const done = client.connect();
    await settle();
    last().ready(fields);
    await done;
    return last();
  }
  /** After a close: run the pending reconnect timer, let the token provider answer. */
  async function reconnect() {
    const before = sockets.length;
    clock.advance(clock.pending()[0] ?? 0);
    await settle();
    assert.equal(sockets.length, before + 1, "a new socket was opened");
    return last();
  }
  return { client, sockets, clock, tokenCalls, seen, events, last, ready, reconnect };
}

test("connects with the token as the jwt. subprotocol, never in the URL, and becomes ready", async () => {
  const h = harness();
  assert.equal(h.client.state, "closed");
  const done = h.client.connect();
  assert.equal(h.client.state, "connecting");
  await settle();
  const ws = h.last();
  assert.equal(ws.url, "wss://a.example/ws");
  assert.deepEqual(ws.protocols, ["jwt-auth", "jwt." + JWT]);
  assert.deepEqual(h.tokenCalls, [{ reason: "connect", fresh: false, attempt: 0 }]);
  assert.equal(h.client.send({ type: "publish" }), false, "nothing is sent before ready");
  ws.ready();
  await done;
  assert.equal(h.client.state, "ready");
  assert.deepEqual(h.events.state.map((e) => e.state), ["connecting", "ready"]);
  assert.equal(h.client.send({ type: "publish", to: "bob", payload: "hi" }), true);
  assert.deepEqual(ws.sent, [{ type: "publish", to: "bob", payload: "hi" }]);
  assert.deepEqual(h.events.resync, [], "a first connection has nothing to resync");
});

test("a token that is not a compact JWT is offered base64url-encoded", async () => {
  const h = harness({ tokens: ["opaque token=1"] });
  h.client.connect();
  await settle();
  assert.deepEqual(h.last().protocols, ["jwt-auth", "jwt." + Buffer.from("opaque token=1").toString("base64url")]);
});

test("frames reach their type's listeners and '*'; off() and the returned unsubscribe stop them", async () => {
  const h = harness();
  const ws = await h.ready();
  const thinking = [];
  const fn = (f) => thinking.push(f.payload.step);
  h.client.on("agent_thinking", fn);
  const stop = h.client.on("agent_completed", () => thinking.push("done"));
  ws.frame({ type: "agent_started", thread_id: "t", run_id: "r", payload: { step: 1 } });
  ws.frame({ type: "agent_thinking", thread_id: "t", run_id: "r", payload: { step: 2 } });
  ws.frame({ type: 5, thread_id: "t", run_id: "r", payload: {} }); // legacy numeric type
  h.client.off("agent_thinking", fn);
  stop();
  ws.frame({ type: "agent_thinking", payload: { step: 3 } });
  ws.frame({ type: "agent_completed", payload: {} });
  assert.deepEqual(thinking, [2, "done"]);
  assert.deepEqual(h.seen, ["ready", "agent_started:2", "agent_thinking:3", "agent_completed:4", "agent_thinking:5", "agent_completed:6"]);
});

test("a throwing listener neither stops delivery nor the client", async () => {
  const errors = [];
  const h = harness({ client: { reportError: (e) => errors.push(e.message) } });
  const ws = await h.ready();
  h.client.on("message", () => { throw new Error("app bug"); });
  ws.frame({ type: "message", payload: "x" });
  assert.deepEqual(errors, ["app bug"]);
  assert.deepEqual(h.seen, ["ready", "message:2"]);
});

for (const code of [1000, 1001, 1006, 1011, 1012, 4408, 4409]) {
  test(`close ${code}: reconnect after the ordinary backoff`, async () => {
    const h = harness();
    await h.ready();
    h.last().serverClose(code, "why");
    assert.equal(h.client.state, "reconnecting");
    assert.deepEqual(h.clock.pending(), [250], "0.5 × 500 ms on the first attempt");
    const state = h.events.state.at(-1);
    assert.deepEqual([state.code, state.reason, state.delay], [code, "why", 250]);
    await h.reconnect();
    assert.equal(h.tokenCalls.at(-1).reason, "reconnect");
    assert.equal(h.tokenCalls.at(-1).fresh, false);
  });
}

for (const code of [1013, 4429]) {
  test(`close ${code}: reconnect after the longer backoff`, async () => {
    const h = harness();
    await h.ready();
    h.last().serverClose(code, "busy");
    assert.deepEqual(h.clock.pending(), [3_500], "2 s + 0.5 × (5 s − 2 s)");
    await h.reconnect();
  });
}

for (const code of [4403, 4400, 1009, 1002, 1007]) {
  test(`close ${code}: no reconnect; the app is told the code and reason`, async () => {
    const h = harness();
    await h.ready();
    h.last().serverClose(code, "forbidden");
    assert.equal(h.client.state, "closed");
    assert.deepEqual(h.clock.pending(), [], "no reconnect scheduled");
    assert.deepEqual(h.events.stopped, [{ cause: "close_code", code, reason: "forbidden" }]);
    const closed = h.events.state.at(-1);
    assert.deepEqual([closed.state, closed.code, closed.reason], ["closed", code, "forbidden"]);
    h.client.connect();
    assert.equal(h.client.state, "connecting", "connect() after a stop starts over");
  });
}

test("a stop rejects a pending connect() with the code", async () => {
  const h = harness();
  const done = h.client.connect();
  await settle();
  h.last().open();
  h.last().serverClose(4403, "forbidden");
  await assert.rejects(done, (e) => e instanceof StoppedError && e.code === 4403 && e.cause === "close_code");
  assert.equal(h.client.state, "closed");
  assert.deepEqual(h.clock.pending(), []);
});

test("4401: a fresh token at once; 4401 again: backoff, still asking for a fresh token", async () => {
  const h = harness();
  await h.ready();
  h.last().serverClose(4401, "token_expired");
  assert.deepEqual(h.clock.pending(), [0]);
  await h.reconnect();
  assert.deepEqual(h.tokenCalls.at(-1), { reason: "unauthorized", fresh: true, attempt: 1 });
  h.last().open();
  h.last().serverClose(4401, "signature_invalid");
  assert.deepEqual(h.clock.pending(), [500], "second attempt: 0.5 × 1 s");
  await h.reconnect();
  assert.deepEqual(h.tokenCalls.at(-1), { reason: "unauthorized", fresh: true, attempt: 2 });
  h.last().ready();
  assert.equal(h.client.state, "ready");
  h.last().serverClose(4401, "token_expired");
  assert.deepEqual(h.clock.pending(), [0], "ready again: the next 4401 is immediate again");
});

test("backoff grows with failed attempts, resets on ready; maxAttempts stops", async () => {
  const h = harness({ client: { maxAttempts: 3 } });
  await h.ready();
  const delays = [];
  for (let i = 0; i < 3; i++) {
    h.last().serverClose(1006);
    delays.push(h.clock.pending()[0]);
    await h.reconnect();
  }
  assert.deepEqual(delays, [250, 500, 1_000]);
  h.last().serverClose(1006);
  assert.deepEqual(h.events.stopped, [{ cause: "max_attempts", code: 1006, reason: "" }]);
  assert.equal(h.client.state, "closed");

  const g = harness();
  await g.ready();
  g.last().serverClose(1006);
  await g.reconnect();
  g.last().serverClose(1006);
  assert.deepEqual(g.clock.pending(), [500]);
  await g.reconnect();
  g.last().ready();
  g.last().serverClose(1006);
  assert.deepEqual(g.clock.pending(), [250], "reset by ready");
});

test("a list of URLs: 1012 and a socket that never opened move to the next", async () => {
  const h = harness({ client: { url: ["wss://a/ws", "wss://b/ws", "wss://c/ws"] } });
  await h.ready();
  assert.equal(h.last().url, "wss://a/ws");
  h.last().serverClose(1012, "restart");
  assert.equal((await h.reconnect()).url, "wss://b/ws");
  h.last().serverClose(1006); // never opened
  assert.equal((await h.reconnect()).url, "wss://c/ws");
  h.last().open();
  h.last().serverClose(1006); // opened: a dropped network, same node
  assert.equal((await h.reconnect()).url, "wss://c/ws");
  h.last().serverClose(1001, "going_away");
  assert.equal((await h.reconnect()).url, "wss://a/ws", "wraps around");
});

test("a node that restarts (1012): the next node gets since and its replay continues the stream", async () => {
  const h = harness({ client: { url: ["wss://a/ws", "wss://b/ws"] } });
  await h.ready({ epoch: "e1", off: 0, recovered: false });
  h.last().frame({ type: "agent_started", off: 1 });
  h.last().frame({ type: "agent_thinking", off: 2 });
  h.last().serverClose(1012, "restart");
  const b = await h.reconnect();
  assert.equal(b.url, "wss://b/ws?since=e1:2");
  b.ready({ epoch: "e1", off: 3, recovered: true });
  b.frame({ type: "tool_executing", off: 3 }); // the replay
  b.frame({ type: "tool_completed", off: 4 }); // live
  assert.equal(h.events.state.at(-1).recovered, true);
  assert.deepEqual(h.events.resync, []);
  assert.deepEqual(h.seen, ["ready", "agent_started:1", "agent_thinking:2", "ready", "tool_executing:3", "tool_completed:4"]);
});

test("a URL function is asked on every connect, with why", async () => {
  const asked = [];
  const h = harness({ client: { url: (ctx) => (asked.push(ctx), `wss://node${asked.length}/ws`) } });
  await h.ready();
  h.last().serverClose(1012, "restart");
  assert.equal((await h.reconnect()).url, "wss://node2/ws");
  assert.deepEqual(asked, [
    { attempt: 0, rotate: false },
    { attempt: 1, rotate: true, code: 1012, reason: "restart" },
  ]);
});

test("a relative URL is resolved against the page", async () => {
  const h = harness({ window: fakePage(), client: { url: "/ws" } });
  h.client.connect();
  await settle();
  assert.equal(h.last().url, "ws://app.example/ws");
});

test("a socket that never opens times out, then reconnects", async () => {
  const h = harness({ client: { connectTimeout: 1_000 } });
  h.client.connect();
  await settle();
  const first = h.last();
  h.clock.advance(1_000);
  assert.deepEqual(first.closedWith, { code: 1000, reason: "connect_timeout" });
  assert.equal(h.client.state, "reconnecting");
  await h.reconnect();
});

test("a token provider that throws is reported and retried with backoff", async () => {
  const h = harness({ client: { token: async () => { throw new Error("auth server down"); } } });
  h.client.connect();
  await settle();
  assert.equal(h.sockets.length, 0);
  assert.equal(h.events.error[0].during, "token");
  assert.equal(h.events.error[0].error.message, "auth server down");
  assert.equal(h.client.state, "reconnecting");
  assert.deepEqual(h.clock.pending(), [250]);
});

test("resume: reconnect with since=<epoch>:<largest off>, replay delivered, duplicates dropped", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 10, recovered: false });
  const ws = h.last();
  ws.frame({ type: "message", off: 11, payload: "a" });
  ws.frame({ type: "message", off: 12, payload: "b" });
  assert.deepEqual(h.client.position, { epoch: "e1", off: 12 });
  ws.serverClose(1006);
  const next = await h.reconnect();
  assert.equal(next.url, "wss://a.example/ws?since=e1:12");
  next.ready({ epoch: "e1", off: 14, recovered: true });
  assert.equal(h.events.state.at(-1).recovered, true);
  next.frame({ type: "message", off: 12, payload: "b" }); // a duplicate
  next.frame({ type: "message", off: 13, payload: "c" });
  next.frame({ type: "message", off: 14, payload: "d" });
  next.frame({ type: "message", off: 13, payload: "c" }); // a duplicate
  next.frame({ type: "message", off: 15, payload: "e" }); // live
  assert.deepEqual(h.seen, ["ready", "message:11", "message:12", "ready", "message:13", "message:14", "message:15"]);
  assert.equal(h.client.stats.duplicates, 2);
  assert.deepEqual(h.events.resync, []);
});

test("resume refused (recovered: false): an explicit resync event, and the position moves on", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 10, recovered: false });
  h.last().serverClose(1012);
  const next = await h.reconnect();
  assert.equal(next.url, "wss://a.example/ws?since=e1:10");
  next.ready({ epoch: "e1", off: 2_000, recovered: false });
  assert.deepEqual(h.events.resync, [{ reason: "not_recovered", epoch: "e1", off: 2_000 }]);
  assert.equal(h.events.state.at(-1).recovered, false);
  next.frame({ type: "message", off: 2_001 });
  assert.deepEqual(h.seen.slice(-2), ["ready", "message:2001"]);
  next.serverClose(1006);
  const third = await h.reconnect();
  assert.equal(third.url, "wss://a.example/ws?since=e1:2001");
  third.ready({ epoch: "e9", off: 0, recovered: false });
  assert.equal(h.events.resync.at(-1).reason, "epoch_changed");
});

test("a persisted position resumes the first connection", async () => {
  const h = harness({ client: { position: { epoch: "e1", off: 41 } } });
  h.client.connect();
  await settle();
  assert.equal(h.last().url, "wss://a.example/ws?since=e1:41");
  h.last().ready({ epoch: "e1", off: 40, recovered: false });
  assert.deepEqual(h.events.resync, [{ reason: "not_recovered", epoch: "e1", off: 40 }]);
});

test("an off jump leaves the connection and resumes from the last off in order", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 0, recovered: false });
  const ws = h.last();
  ws.frame({ type: "message", off: 1 });
  ws.frame({ type: "message", off: 3 }); // 2 is missing
  ws.frame({ type: "message", off: 4 }); // ignored: the connection is left
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "resume" });
  assert.deepEqual(h.clock.pending(), [0], "the first resume is immediate");
  const next = await h.reconnect();
  assert.equal(next.url, "wss://a.example/ws?since=e1:1");
  next.ready({ epoch: "e1", off: 4, recovered: true });
  for (const off of [2, 3, 4]) next.frame({ type: "message", off });
  assert.deepEqual(h.seen, ["ready", "message:1", "ready", "message:2", "message:3", "message:4"]);
  assert.equal(h.client.stats.gaps, 1);
  assert.equal(h.client.stats.resumes, 1);
});

test("repeated gaps back off instead of hammering", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 0 });
  const delays = [];
  for (let i = 0; i < 3; i++) {
    h.last().frame({ type: "message", off: 5 });
    delays.push(h.clock.pending()[0]);
    await h.reconnect();
    h.last().ready({ epoch: "e1", off: 5, recovered: true });
  }
  assert.deepEqual(delays, [0, 250, 500]);
  h.last().frame({ type: "message", off: 1 }); // in order: the streak ends
  h.last().frame({ type: "message", off: 5 });
  assert.deepEqual(h.clock.pending(), [0]);
});

test("a gap frame: delivered, then a resume with since", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 3 });
  h.last().frame({ type: "gap", payload: { reason: "backplane_reconnected" } });
  assert.deepEqual(h.seen, ["ready", "gap:2"]);
  assert.equal(h.client.state, "reconnecting");
  const next = await h.reconnect();
  assert.equal(next.url, "wss://a.example/ws?since=e1:3");
});

test("a gap ahead of the ready frame is not taken for ready: the client resumes from its position", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 3, recovered: false });
  h.last().serverClose(1006);
  const ws = await h.reconnect();
  assert.equal(ws.url, "wss://a.example/ws?since=e1:3");
  ws.open();
  ws.frame({ type: "gap", payload: { reason: "backplane_reconnected" } }); // seq 1, before ready
  assert.deepEqual(h.client.position, { epoch: "e1", off: 3 }, "the position is not reset");
  assert.deepEqual(h.events.resync, []);
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "resume" });
  const next = await h.reconnect();
  assert.equal(next.url, "wss://a.example/ws?since=e1:3");
  next.ready({ epoch: "e1", off: 4, recovered: true });
  next.frame({ type: "message", off: 4 });
  assert.deepEqual(h.seen, ["ready", "gap:1", "ready", "message:4"]);
  assert.equal(h.events.state.at(-1).recovered, true);
});

test("a first connection: control frames ahead of ready are delivered, ready positions", async () => {
  const h = harness();
  const done = h.client.connect();
  await settle();
  const ws = h.last();
  ws.open();
  ws.frame({ type: "reauth_ok", payload: { expires_at: null } });
  assert.equal(h.client.state, "connecting", "not ready on a control frame");
  ws.frame({ type: "ready", epoch: "e1", off: 7, recovered: false });
  await done;
  assert.deepEqual(h.client.position, { epoch: "e1", off: 7 });
  assert.deepEqual(h.seen, ["reauth_ok:1", "ready"]);
  assert.deepEqual(h.events.resync, []);
});

test("seq: duplicates dropped; a skipped seq with contiguous off needs no resume", async () => {
  const h = harness();
  await h.ready({ epoch: "e1", off: 0 });
  const ws = h.last();
  ws.frame({ type: "message", off: 1 }); // seq 2
  ws.raw(JSON.stringify({ v: 1, seq: 2, type: "message", off: 1 })); // seq repeated
  ws.seq = 4; // seq 3 (a control frame) was dropped by the server
  ws.frame({ type: "message", off: 2 }); // seq 5
  assert.deepEqual(h.seen, ["ready", "message:1", "message:2"]);
  assert.equal(h.client.stats.seqGaps, 1);
  assert.equal(h.client.state, "ready");
  assert.deepEqual(h.events.resync, []);
});

test("a server without off, epoch or recovered: no since, resync after each reconnect, seq gaps reported", async () => {
  const h = harness();
  await h.ready(); // { type: "ready", connection_id, user } only
  const ws = h.last();
  ws.frame({ type: "message", payload: "a" });
  ws.seq = 5;
  ws.frame({ type: "message", payload: "b" }); // seq 6, 3..5 lost
  assert.deepEqual(h.events.resync, [{ reason: "seq_gap", epoch: null, off: null }]);
  ws.frame({ type: "gap", payload: { reason: "backplane_lost_events" } });
  assert.deepEqual(h.events.resync.at(-1).reason, "gap");
  assert.equal(h.client.state, "ready", "no epoch: nothing to resume, stay connected");
  ws.serverClose(1006);
  const next = await h.reconnect();
  assert.equal(next.url, "wss://a.example/ws", "no since");
  next.ready();
  assert.deepEqual(h.events.resync.at(-1), { reason: "no_resume", epoch: null, off: null });
  assert.equal(h.client.state, "ready");
});

test("a server that sends no ready frame: the first frame makes the connection ready", async () => {
  const h = harness();
  const done = h.client.connect();
  await settle();
  h.last().open();
  assert.equal(h.client.state, "connecting");
  h.last().frame({ type: "message", payload: "x" });
  await done;
  assert.equal(h.client.state, "ready");

  const g = harness({ client: { waitForReady: false } });
  const opened = g.client.connect();
  await settle();
  g.last().open();
  await opened;
  assert.equal(g.client.state, "ready", "waitForReady: false: ready at open");
});

test("in-band reauth: reauth_required asks the provider and sends the token; reauth_failed retries", async () => {
  const h = harness({ tokens: [JWT, "new.token.1", "new.token.2", "new.token.3"] });
  await h.ready();
  const ws = h.last();
  ws.frame({ type: "reauth_required", payload: { expires_at: 1_795_000_000 } });
  await settle();
  assert.deepEqual(h.tokenCalls.at(-1), { reason: "reauth", fresh: true, attempt: 0 });
  assert.deepEqual(ws.sent, [{ type: "reauth", token: "new.token.1" }]);
  ws.frame({ type: "reauth_failed", payload: { code: "token_expired" } });
  assert.deepEqual(h.clock.pending(), [250]);
  h.clock.advance(250);
  await settle();
  assert.deepEqual(ws.sent.at(-1), { type: "reauth", token: "new.token.2" });
  ws.frame({ type: "reauth_ok", payload: { expires_at: 1_795_003_600 } });
  assert.deepEqual(h.seen.slice(1), ["reauth_required:2", "reauth_failed:3", "reauth_ok:4"]);
  assert.equal(h.client.state, "ready");
});

test("reauth_failed gives up after reauthRetries and reports it", async () => {
  const h = harness({ client: { reauthRetries: 1 } });
  await h.ready();
  h.last().frame({ type: "reauth_failed", payload: { code: "signature_invalid" } });
  h.clock.advance(h.clock.pending()[0]);
  await settle();
  h.last().frame({ type: "reauth_failed", payload: { code: "signature_invalid" } });
  assert.deepEqual(h.clock.pending(), []);
  assert.equal(h.events.error.at(-1).during, "reauth");
});

test("offline: no reconnect until the page is back online, then at once", async () => {
  const page = fakePage();
  const h = harness({ window: page });
  await h.ready();
  page.navigator.onLine = false;
  h.last().serverClose(1006);
  assert.equal(h.client.state, "reconnecting");
  assert.equal(h.events.state.at(-1).waiting, true);
  assert.deepEqual(h.clock.pending(), [], "no timer while offline");
  page.goOnline();
  await settle();
  assert.equal(h.sockets.length, 2);
});

test("online cuts an ordinary backoff short, not a 4429 one", async () => {
  const page = fakePage();
  const h = harness({ window: page });
  await h.ready();
  h.last().open();
  for (let i = 0; i < 3; i++) {
    h.last().serverClose(1006);
    await h.reconnect();
  }
  h.last().serverClose(1006);
  assert.deepEqual(h.clock.pending(), [2_000]);
  page.goOnline();
  await settle();
  assert.equal(h.sockets.length, 5, "reconnected at once");
  h.last().serverClose(4429, "rate_limited");
  page.goOnline();
  await settle();
  assert.equal(h.sockets.length, 5, "the rate limit's backoff stands");
});

test("hidden: the first reconnect goes, later ones wait until the page is visible", async () => {
  const page = fakePage();
  const h = harness({ window: page });
  await h.ready();
  page.document.visibilityState = "hidden";
  h.last().serverClose(1012);
  await h.reconnect(); // the first reconnect, even hidden
  h.last().serverClose(1006);
  const before = h.sockets.length;
  h.clock.advance(60_000);
  await settle();
  assert.equal(h.sockets.length, before, "hidden: waiting");
  assert.equal(h.client.state, "reconnecting");
  page.show();
  await settle();
  assert.equal(h.sockets.length, before + 1);
});

test("close(): closed for good, timers cleared, page listeners removed, position kept", async () => {
  const page = fakePage();
  const h = harness({ window: page });
  await h.ready({ epoch: "e1", off: 5 });
  assert.equal(page.listening(), 2);
  const ws = h.last();
  h.client.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "" });
  ws.serverClose(1000); // the close handshake's answer: ignored
  assert.equal(h.client.state, "closed");
  assert.deepEqual(h.clock.pending(), []);
  assert.equal(page.listening(), 0);
  assert.deepEqual(h.events.stopped, []);
  h.client.connect();
  await settle();
  assert.equal(h.last().url, "wss://a.example/ws?since=e1:5", "connect() again resumes");
});

test("close() while waiting for the token: no socket is opened", async () => {
  const h = harness();
  const done = h.client.connect();
  h.client.close();
  await settle();
  assert.equal(h.sockets.length, 0);
  await assert.rejects(done, StoppedError);
});

test("non-JSON and binary frames are reported or ignored, never delivered", async () => {
  const h = harness();
  const ws = await h.ready();
  ws.raw("not json");
  ws.raw(new Uint8Array([1, 2]));
  assert.equal(h.events.error.at(-1).during, "parse");
  assert.deepEqual(h.seen, ["ready"]);
});
