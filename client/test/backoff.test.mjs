// The backoff schedules and the close-code decisions (docs/client.md, "Reconnect policy").
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CloseCode, DEFAULT_BACKOFF, DEFAULT_SLOW_BACKOFF, backoffDelay, classifyClose, planReconnect,
} from "../ws-lifecycle.js";

const fixed = (value) => () => value;

test("full jitter: the delay spans 0 .. base·2^attempt", () => {
  const schedule = { base: 100, cap: 10_000 };
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, schedule, fixed(0))), [0, 0, 0, 0]);
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, schedule, fixed(0.5))), [50, 100, 200, 400]);
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, schedule, fixed(0.999999))), [100, 200, 400, 800]);
});

test("the ceiling stops at the cap, however many attempts", () => {
  const schedule = { base: 500, cap: 30_000 };
  for (const attempt of [6, 7, 10, 100, 10_000]) {
    assert.equal(backoffDelay(attempt, schedule, fixed(0.5)), 15_000, `attempt ${attempt}`);
    assert.ok(backoffDelay(attempt, schedule, fixed(0.999999)) <= 30_000);
  }
});

test("a floor lifts the low end without passing the ceiling", () => {
  const schedule = { base: 5_000, cap: 120_000, min: 2_000 };
  assert.equal(backoffDelay(0, schedule, fixed(0)), 2_000);
  assert.equal(backoffDelay(0, schedule, fixed(0.5)), 3_500);
  assert.equal(backoffDelay(3, schedule, fixed(0.5)), 21_000);
  assert.equal(backoffDelay(0, { base: 100, cap: 1_000, min: 5_000 }, fixed(0.5)), 100);
});

test("the defaults: 0.5 s doubling to 30 s; the slow one from 2 s, doubling from 5 s to 2 min", () => {
  assert.deepEqual(DEFAULT_BACKOFF, { base: 500, cap: 30_000, min: 0 });
  assert.deepEqual(DEFAULT_SLOW_BACKOFF, { base: 5_000, cap: 120_000, min: 2_000 });
  assert.equal(backoffDelay(0, undefined, fixed(0.999999)), 500);
});

test("every delay drawn stays within its bounds (a seeded walk)", () => {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let attempt = 0; attempt < 50; attempt++) {
    for (const s of [DEFAULT_BACKOFF, DEFAULT_SLOW_BACKOFF]) {
      const delay = backoffDelay(attempt, s, random);
      const ceiling = Math.min(s.cap, s.base * 2 ** attempt);
      assert.ok(delay >= Math.min(s.min, ceiling) && delay <= ceiling, `${attempt}: ${delay}`);
    }
  }
});

test("the close-code table", () => {
  const table = {
    1000: ["retry", false], // a close the client did not ask for
    1001: ["retry", true], // going away: another node
    1002: ["stop", false],
    1005: ["retry", false],
    1006: ["retry", false], // dropped network
    1007: ["stop", false],
    1009: ["stop", false],
    1011: ["retry", false],
    1012: ["retry", true], // restart: another node
    1013: ["slow", true],
    4400: ["stop", false],
    4401: ["refresh", false],
    4403: ["stop", false],
    4408: ["retry", false],
    4409: ["retry", false],
    4429: ["slow", false],
    4999: ["retry", false], // unknown: retry with backoff
  };
  for (const [code, [action, rotate]] of Object.entries(table)) {
    assert.deepEqual(classifyClose(Number(code)), { action, rotate }, code);
  }
  assert.equal(CloseCode.FORBIDDEN, 4403);
  assert.equal(CloseCode.RATE_LIMITED, 4429);
});

test("planReconnect: ordinary and slow backoff by attempt", () => {
  const options = { random: fixed(0.5) };
  assert.deepEqual(planReconnect({ code: 1006, attempt: 0 }, options), { stop: false, delay: 250, fresh: false, rotate: false });
  assert.deepEqual(planReconnect({ code: 1011, attempt: 3 }, options), { stop: false, delay: 2_000, fresh: false, rotate: false });
  assert.deepEqual(planReconnect({ code: 4429, attempt: 0 }, options), { stop: false, delay: 3_500, fresh: false, rotate: false });
  assert.deepEqual(planReconnect({ code: 1013, attempt: 1 }, options), { stop: false, delay: 6_000, fresh: false, rotate: true });
});

test("planReconnect: a first 4401 refreshes at once, repeated 4401s back off", () => {
  const options = { random: fixed(0.5) };
  assert.deepEqual(planReconnect({ code: 4401, attempt: 0, authFailures: 1 }, options), { stop: false, delay: 0, fresh: true, rotate: false });
  assert.deepEqual(planReconnect({ code: 4401, attempt: 1, authFailures: 2 }, options), { stop: false, delay: 500, fresh: true, rotate: false });
});

test("planReconnect: stop codes and the attempt cap", () => {
  for (const code of [4403, 4400, 1009, 1002, 1007]) {
    assert.deepEqual(planReconnect({ code, attempt: 0 }, {}), { stop: true, cause: "close_code" }, String(code));
  }
  assert.deepEqual(planReconnect({ code: 1006, attempt: 5 }, { maxAttempts: 5 }), { stop: true, cause: "max_attempts" });
  assert.equal(planReconnect({ code: 1006, attempt: 4 }, { maxAttempts: 5, random: fixed(0) }).stop, false);
});

test("planReconnect: a socket that never opened moves to the next URL", () => {
  assert.equal(planReconnect({ code: 1006, attempt: 0, opened: false }, { random: fixed(0) }).rotate, true);
  assert.equal(planReconnect({ code: 1006, attempt: 0, opened: true }, { random: fixed(0) }).rotate, false);
});

test("planReconnect: configured schedules and caps apply", () => {
  const options = { random: fixed(0.999999), backoff: { base: 1_000, cap: 4_000 }, slowBackoff: { base: 10_000, cap: 20_000, min: 9_000 } };
  assert.equal(planReconnect({ code: 1006, attempt: 10 }, options).delay, 4_000);
  assert.equal(planReconnect({ code: 4429, attempt: 10 }, options).delay, 20_000);
});
