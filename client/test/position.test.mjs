// Stream position bookkeeping: since, ready, duplicates and gaps (docs/client.md, "Resume").
import { test } from "node:test";
import assert from "node:assert/strict";
import { StreamPosition, checkSeq, eventName, formatSince, resolveUrl, withSince } from "../ws-lifecycle.js";

test("formatSince: the protocol's grammar only", () => {
  assert.equal(formatSince("e1", 0), "e1:0");
  assert.equal(formatSince("A-z_9", 12345), "A-z_9:12345");
  assert.equal(formatSince("x".repeat(64), 1), "x".repeat(64) + ":1");
  for (const [epoch, off] of [
    [null, 1], ["", 1], ["x".repeat(65), 1], ["a:b", 1], ["a b", 1], ["é", 1],
    ["e", null], ["e", -1], ["e", 1.5], ["e", "3"], ["e", 2 ** 53],
  ]) {
    assert.equal(formatSince(epoch, off), null, `${epoch} ${off}`);
  }
});

test("withSince adds, replaces and removes the since parameter, keeping the rest", () => {
  assert.equal(withSince("wss://h/ws", "e:1"), "wss://h/ws?since=e:1");
  assert.equal(withSince("wss://h/ws?room=a%20b", "e:1"), "wss://h/ws?room=a%20b&since=e:1");
  assert.equal(withSince("wss://h/ws?since=old:1&x=1", "e:2"), "wss://h/ws?x=1&since=e:2");
  assert.equal(withSince("wss://h/ws?SINCE=a&%73ince=b&x", "e:2"), "wss://h/ws?x&since=e:2");
  assert.equal(withSince("wss://h/ws?since=old:1", null), "wss://h/ws");
  assert.equal(withSince("wss://h/ws?x=1#frag", "e:3"), "wss://h/ws?x=1&since=e:3#frag");
  assert.equal(withSince("wss://h/ws?%E0%A4%A=1", "e:3"), "wss://h/ws?%E0%A4%A=1&since=e:3");
  assert.equal(withSince("wss://h/ws", null), "wss://h/ws");
});

test("resolveUrl: ws URLs as given, http and relative ones converted", () => {
  assert.equal(resolveUrl("wss://a.example/ws"), "wss://a.example/ws");
  assert.equal(resolveUrl("https://a.example/ws"), "wss://a.example/ws");
  assert.equal(resolveUrl("/ws", "http://127.0.0.1:3000/page"), "ws://127.0.0.1:3000/ws");
  assert.equal(resolveUrl("ws", "https://a.example/app/"), "wss://a.example/app/ws");
  assert.throws(() => resolveUrl("/ws"), TypeError);
});

test("a fresh position has no since; a ready frame gives it one", () => {
  const p = new StreamPosition();
  assert.equal(p.since, null);
  assert.deepEqual(p.ready({ type: "ready", epoch: "e1", off: 7, recovered: false }, null), { recovered: false, reason: "not_recovered" });
  assert.equal(p.since, "e1:7");
});

test("in-order events advance; duplicates are dropped; a jump is a gap", () => {
  const p = new StreamPosition();
  p.ready({ epoch: "e1", off: 7 }, null);
  assert.equal(p.accept({ type: "message", off: 8 }), "deliver");
  assert.equal(p.accept({ type: "message", off: 9 }), "deliver");
  assert.equal(p.accept({ type: "message", off: 9 }), "duplicate");
  assert.equal(p.accept({ type: "message", off: 3 }), "duplicate");
  assert.equal(p.accept({ type: "message", off: 11 }), "gap");
  assert.equal(p.since, "e1:9", "a gap does not move the position");
  assert.equal(p.accept({ type: "gap", payload: {} }), "deliver", "frames without off pass");
  assert.equal(p.accept({ type: "x", off: "10" }), "deliver", "a malformed off is not an offset");
});

test("a recovered resume keeps the position: the replay follows", () => {
  const p = new StreamPosition({ epoch: "e1", off: 9 });
  assert.deepEqual(p.ready({ epoch: "e1", off: 12, recovered: true }, "e1:9"), { recovered: true });
  assert.equal(p.since, "e1:9");
  assert.equal(p.accept({ off: 10 }), "deliver");
  assert.equal(p.accept({ off: 11 }), "deliver");
  assert.equal(p.accept({ off: 12 }), "deliver");
  assert.equal(p.accept({ off: 12 }), "duplicate");
});

test("not recovered: the position moves to the ready frame's, with the reason", () => {
  const p = new StreamPosition({ epoch: "e1", off: 9 });
  assert.deepEqual(p.ready({ epoch: "e1", off: 50, recovered: false }, "e1:9"), { recovered: false, reason: "not_recovered" });
  assert.equal(p.since, "e1:50");
  assert.deepEqual(p.ready({ epoch: "e2", off: 0, recovered: false }, "e1:50"), { recovered: false, reason: "epoch_changed" });
  assert.equal(p.since, "e2:0");
  // recovered:true for another epoch, or for a since we did not send, is not believed.
  assert.deepEqual(p.ready({ epoch: "e3", off: 4, recovered: true }, "e2:0"), { recovered: false, reason: "epoch_changed" });
  assert.deepEqual(p.ready({ epoch: "e3", off: 4, recovered: true }, null), { recovered: false, reason: "not_recovered" });
});

test("a server without resume: no epoch, no since, dedupe still works", () => {
  const p = new StreamPosition({ epoch: "e1", off: 9 });
  assert.deepEqual(p.ready({ type: "ready", connection_id: "c" }, "e1:9"), { recovered: false, reason: "no_resume" });
  assert.equal(p.since, null);
  assert.equal(p.accept({ type: "message" }), "deliver");
  assert.equal(p.accept({ off: 4 }), "deliver");
  assert.equal(p.accept({ off: 4 }), "duplicate");
  assert.equal(p.accept({ off: 9 }), "jump", "no epoch to resume with: delivered");
  assert.equal(p.off, 9);
});

test("an invalid epoch from the server is never sent back", () => {
  const p = new StreamPosition();
  p.ready({ epoch: "bad epoch!", off: 3 }, null);
  assert.equal(p.since, null);
  assert.equal(new StreamPosition({ epoch: "ok", off: -1 }).since, null);
});

test("checkSeq: 1, 2, 3 … per connection", () => {
  assert.equal(checkSeq(0, 1), "ok");
  assert.equal(checkSeq(1, 2), "ok");
  assert.equal(checkSeq(2, 2), "duplicate");
  assert.equal(checkSeq(5, 1), "duplicate");
  assert.equal(checkSeq(2, 4), "gap");
  assert.equal(checkSeq(0, 2), "gap");
  assert.equal(checkSeq(3, undefined), "none");
  assert.equal(checkSeq(3, "4"), "none");
});

test("eventName: legacy numeric agent types get their names", () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(eventName), ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]);
  assert.equal(eventName(9), "9");
  assert.equal(eventName("chat.message"), "chat.message");
});
