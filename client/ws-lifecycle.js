// ws-lifecycle.js: a browser client for servers built on ws-lifecycle.
//
// One dependency-free ES module, no build step. It authenticates with the
// `jwt.` subprotocol, re-authenticates in band, reconnects by close code with
// jittered backoff, and resumes the user's stream with `since=<epoch>:<off>`.
// The API, the reconnect policy and the resume rules: docs/client.md. The wire
// protocol: docs/protocol.md.
//
// The pure pieces (subprotocol encoding, backoff, close-code decisions,
// stream position, since URLs) are exported for tests and for other clients.

/** The five agent events, in order; legacy servers send them as 1 … 5. */
export const AGENT_EVENTS = Object.freeze([
  "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed",
]);

/** The close codes a ws-lifecycle server (or the browser) reports. */
export const CloseCode = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, PROTOCOL_ERROR: 1002, NO_STATUS: 1005, ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007, MESSAGE_TOO_BIG: 1009, INTERNAL_ERROR: 1011, RESTART: 1012,
  TRY_AGAIN_LATER: 1013, PROTOCOL_INVALID: 4400, UNAUTHORIZED: 4401, FORBIDDEN: 4403,
  AUTH_TIMEOUT: 4408, SLOW_CONSUMER: 4409, RATE_LIMITED: 4429,
});

// ---------------------------------------------------------------- subprotocol

/** The marker subprotocol the server echoes; it must be offered with the token. */
export const MARKER = "jwt-auth";

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** Unpadded base64url of `text`'s UTF-8 bytes. */
export function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 4) / 3));
    for (let k = 0; k < chars; k++) out += B64URL[(n >> (18 - 6 * k)) & 63];
  }
  return out;
}

/**
 * The token-bearing subprotocol: `jwt.<token>` for a compact JWT (three
 * base64url segments, always valid subprotocol characters), else
 * `jwt.<base64url of the token>`. The server reads a raw value only when it
 * is a compact JWS and decodes anything else as base64url (docs/auth.md), so
 * every token that is not a compact JWS, including every token with a
 * character a subprotocol may not carry, travels encoded.
 */
export function tokenSubprotocol(token) {
  return "jwt." + (COMPACT_JWS.test(token) ? token : base64url(token));
}

/** What to offer for `token`: the marker and the token, or nothing without a token. */
export function subprotocols(token) {
  return token ? [MARKER, tokenSubprotocol(String(token))] : [];
}

// -------------------------------------------------------------------- backoff

/** Exponential backoff with full jitter, for drops and server errors. */
export const DEFAULT_BACKOFF = Object.freeze({ base: 500, cap: 30_000, min: 0 });
/** The longer schedule for 4429 (rate or connection limit) and 1013 (try later). */
export const DEFAULT_SLOW_BACKOFF = Object.freeze({ base: 5_000, cap: 120_000, min: 2_000 });

/**
 * The delay before reconnect number `attempt` (0-based): uniform in
 * [min, min(cap, base·2^attempt)], drawn with `random` (a `Math.random`).
 */
export function backoffDelay(attempt, schedule = DEFAULT_BACKOFF, random = Math.random) {
  const { base, cap, min = 0 } = schedule;
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 40));
  const low = Math.min(min, ceiling);
  return Math.round(low + random() * (ceiling - low));
}

// ----------------------------------------------------------------- close codes

const STOP = new Set([1002, 1007, 1009, 4400, 4403]);

/**
 * What a close code asks of the client: `action` is "retry" (backoff),
 * "slow" (the longer backoff), "refresh" (a fresh token, then at once) or
 * "stop"; `rotate` moves to the next server URL.
 */
export function classifyClose(code) {
  if (STOP.has(code)) return { action: "stop", rotate: false };
  if (code === 4401) return { action: "refresh", rotate: false };
  if (code === 4429) return { action: "slow", rotate: false };
  if (code === 1013) return { action: "slow", rotate: true };
  return { action: "retry", rotate: code === 1001 || code === 1012 };
}

/**
 * The next step after a close. `attempt`: reconnects tried since the last
 * ready connection; `authFailures`: 4401s in a row; `opened`: whether the
 * socket opened at all (one that never did moves to the next URL). Returns
 * `{ stop: true, cause }` or `{ stop: false, delay, fresh, rotate }`.
 */
export function planReconnect({ code, attempt, authFailures = 0, opened = true }, options = {}) {
  const { backoff = DEFAULT_BACKOFF, slowBackoff = DEFAULT_SLOW_BACKOFF } = options;
  const { maxAttempts = Infinity, random = Math.random } = options;
  const { action, rotate } = classifyClose(code);
  if (action === "stop") return { stop: true, cause: "close_code" };
  if (attempt >= maxAttempts) return { stop: true, cause: "max_attempts" };
  const delay =
    action === "slow" ? backoffDelay(attempt, slowBackoff, random)
    // A first 4401 reconnects at once with a fresh token; a token provider
    // that keeps handing out refused tokens gets the ordinary backoff.
    : action === "refresh" && authFailures <= 1 ? 0
    : backoffDelay(attempt, backoff, random);
  return { stop: false, delay, fresh: action === "refresh", rotate: rotate || !opened };
}

// ------------------------------------------------------------ stream position

const EPOCH = /^[A-Za-z0-9_-]{1,64}$/;
const isOffset = (off) => Number.isSafeInteger(off) && off >= 0;

/** `<epoch>:<off>`, or null when either is missing or not of the protocol's grammar. */
export function formatSince(epoch, off) {
  return typeof epoch === "string" && EPOCH.test(epoch) && isOffset(off) ? `${epoch}:${off}` : null;
}

/** `url` with its `since` parameter replaced by `since` (removed when null). */
export function withSince(url, since) {
  const hashAt = url.indexOf("#");
  const hash = hashAt < 0 ? "" : url.slice(hashAt);
  const rest = hashAt < 0 ? url : url.slice(0, hashAt);
  const queryAt = rest.indexOf("?");
  const path = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const params = queryAt < 0 ? [] : rest.slice(queryAt + 1).split("&");
  const kept = params.filter((pair) => pair && !isSinceParam(pair));
  if (since) kept.push("since=" + since);
  return path + (kept.length ? "?" + kept.join("&") : "") + hash;
}

function isSinceParam(pair) {
  const name = pair.split("=")[0].replace(/\+/g, " ");
  try {
    return decodeURIComponent(name).toLowerCase() === "since";
  } catch {
    return false;
  }
}

/** A `ws:`/`wss:` URL for `url`; `http(s):` and paths relative to `base` are converted. */
export function resolveUrl(url, base) {
  if (/^wss?:\/\//i.test(url)) return url;
  if (!/^https?:\/\//i.test(url) && !base) throw new TypeError(`relative URL without a page: ${url}`);
  return new URL(url, base).href.replace(/^http/i, "ws");
}

/**
 * The user's stream position: its `epoch` and the largest `off` seen. Knows
 * what a `ready` frame means for it and which frames are duplicates or
 * follow a gap. Frames without `off` (control frames) pass untouched.
 */
export class StreamPosition {
  constructor(start) {
    this.epoch = null;
    this.off = null;
    if (start && formatSince(start.epoch, start.off)) ({ epoch: this.epoch, off: this.off } = start);
  }

  /** `<epoch>:<off>` to resume from, or null when the server gave no epoch. */
  get since() {
    return formatSince(this.epoch, this.off);
  }

  /**
   * Applies a connection's `ready` frame; `sent` is the since that
   * connection asked for (or null). Returns `{ recovered: true }` when the
   * server replays what followed `sent`; otherwise the position moves to the
   * ready frame's and `{ recovered: false, reason }` says why.
   */
  ready(frame, sent) {
    const epoch = typeof frame.epoch === "string" && EPOCH.test(frame.epoch) ? frame.epoch : null;
    if (sent && sent === this.since && frame.recovered === true && epoch === this.epoch) {
      return { recovered: true };
    }
    const reason = !epoch ? "no_resume"
      : this.epoch && epoch !== this.epoch ? "epoch_changed"
      : "not_recovered";
    this.epoch = epoch;
    this.off = isOffset(frame.off) ? frame.off : null;
    return { recovered: false, reason };
  }

  /**
   * Where a frame stands: "deliver" (in order, or without `off`),
   * "duplicate" (`off` already seen: drop it), "gap" (an `off` was skipped
   * and the position can resume: reconnect, the frame will be replayed) or
   * "jump" (skipped, but no epoch to resume with: delivered, position moved).
   */
  accept(frame) {
    const { off } = frame;
    if (!isOffset(off)) return "deliver";
    if (this.off !== null && off <= this.off) return "duplicate";
    if (this.off !== null && off > this.off + 1) {
      if (this.since) return "gap";
      this.off = off;
      return "jump";
    }
    this.off = off;
    return "deliver";
  }
}

/**
 * A frame's `seq` against the connection's last one: "ok" (last + 1),
 * "duplicate" (not above last), "gap" (above last + 1), "none" (no seq).
 */
export function checkSeq(last, seq) {
  if (!Number.isSafeInteger(seq)) return "none";
  return seq === last + 1 ? "ok" : seq <= last ? "duplicate" : "gap";
}

/** A frame's event name: legacy numeric agent types become their names. */
export function eventName(type) {
  return typeof type === "number" ? AGENT_EVENTS[type - 1] ?? String(type) : String(type);
}

// --------------------------------------------------------------------- client

const OPEN = 1;
const noop = () => {};
// The server's own control frames: per connection, without `off`, and
// possibly ahead of the application's `ready` frame.
const CONTROL = new Set(["gap", "reauth_required", "reauth_ok", "reauth_failed"]);

/** Why the client stopped; the rejection of `connect()` when it stops. */
export class StoppedError extends Error {
  constructor(detail) {
    super(`ws-lifecycle client stopped: ${detail.cause}${detail.code ? ` (${detail.code} ${detail.reason ?? ""})` : ""}`);
    this.name = "StoppedError";
    Object.assign(this, detail);
  }
}

/** A WebSocket client that stays connected, authenticated and resumed. See docs/client.md. */
export class WsLifecycleClient {
  #o;
  #listeners = new Map();
  #state = "closed";
  #conn = null; // the current connection: { ws, since, opened, ready, positioned, seq, timers }
  #timer = null; // the pending reconnect
  #pending = null; // what to do when it fires, or when the page is back
  #generation = 0; // bumped by every open and close: a stale token await gives up
  #wanted = false;
  #attempt = 0;
  #authFailures = 0;
  #gapStreak = 0;
  #urlIndex = 0;
  #lastClose = {};
  #positioned = false; // some connection's ready frame was seen
  #position;
  #waiters = [];
  #stats = { duplicates: 0, gaps: 0, seqGaps: 0, resumes: 0, reconnects: 0 };
  #onWake = (event) => this.#wake(event?.type === "online");

  constructor(options) {
    if (!options?.url) throw new TypeError("WsLifecycleClient: `url` is required");
    const g = globalThis;
    this.#o = {
      maxAttempts: Infinity,
      reauthRetries: 3,
      connectTimeout: 10_000,
      waitForReady: true,
      pauseWhenHidden: true,
      WebSocket: g.WebSocket,
      setTimeout: (fn, ms) => g.setTimeout(fn, ms),
      clearTimeout: (id) => g.clearTimeout(id),
      random: Math.random,
      reportError: g.reportError ?? ((error) => queueMicrotask(() => { throw error; })),
      window: typeof g.window === "object" ? g.window : null,
      ...options,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      slowBackoff: { ...DEFAULT_SLOW_BACKOFF, ...options.slowBackoff },
    };
    this.#position = new StreamPosition(options.position);
  }

  /** "connecting", "ready", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  /** The stream position to resume from: persist it to resume after a page load. */
  get position() {
    return { epoch: this.#position.epoch, off: this.#position.off };
  }

  /** Counters: duplicates dropped, gaps seen, resumes, reconnects. */
  get stats() {
    return { ...this.#stats };
  }

  /** Listens to frames of `type`, to every frame ("*"), or to a "client:…" event; returns an unsubscribe. */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  /** Removes `listener`, or every listener of `type` without one. */
  off(type, listener) {
    if (listener) this.#listeners.get(type)?.delete(listener);
    else this.#listeners.delete(type);
  }

  /** Starts (or restarts) connecting; resolves with the next ready state, rejects if the client stops first. */
  connect() {
    this.#wanted = true;
    if (this.#state === "closed") {
      this.#attempt = 0;
      this.#authFailures = 0;
      this.#watchPage(true);
      this.#open("connect", false);
    } else if (this.#state === "reconnecting") {
      this.#open(this.#pending?.why ?? "reconnect", this.#pending?.fresh ?? false);
    }
    if (this.#state === "ready") return Promise.resolve();
    const ready = new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    ready.catch(noop); // an ignored connect() never reports an unhandled rejection
    return ready;
  }

  /** Sends `message` (JSON-encoded unless a string) when ready; false (nothing sent) otherwise. */
  send(message) {
    const ws = this.#conn?.ws;
    if (this.#state !== "ready" || !ws || ws.readyState !== OPEN) return false;
    ws.send(typeof message === "string" ? message : JSON.stringify(message));
    return true;
  }

  /** Closes for good (until the next `connect()`); the stream position is kept. */
  close(code = 1000, reason = "") {
    this.#wanted = false;
    this.#generation++;
    this.#cancelReconnect();
    this.#drop(code, reason);
    this.#watchPage(false);
    this.#settle(new StoppedError({ cause: "client", code, reason }));
    this.#setState("closed", { code, reason, cause: "client" });
  }

  // ------------------------------------------------------------- internals

  #emit(type, ...args) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        this.#o.reportError(error); // reported, never breaks the client
      }
    }
  }

  #setState(state, detail = {}) {
    const previous = this.#state;
    this.#state = state;
    if (previous !== state || state === "reconnecting") this.#emit("client:state", { state, previous, ...detail });
  }

  #settle(error) {
    const waiters = this.#waiters.splice(0);
    for (const w of waiters) (error ? w.reject(error) : w.resolve());
  }

  #url(rotate) {
    const { url } = this.#o;
    if (typeof url === "function") return url({ attempt: this.#attempt, rotate, ...this.#lastClose });
    if (Array.isArray(url)) return url[this.#urlIndex % url.length];
    return url;
  }

  // Whether to connect now: never while offline; while hidden, only the
  // first connect and the first reconnect after a drop.
  #canConnect() {
    const page = this.#o.window;
    if (page?.navigator?.onLine === false) return false;
    const hidden = page?.document?.visibilityState === "hidden";
    return !(hidden && this.#o.pauseWhenHidden && this.#attempt > 1);
  }

  #watchPage(on) {
    const page = this.#o.window;
    const method = on ? "addEventListener" : "removeEventListener";
    page?.[method]?.("online", this.#onWake);
    page?.document?.[method]?.("visibilitychange", this.#onWake);
  }

  // The page came back (online, or visible): a waiting reconnect goes now,
  // and coming online also cuts short an ordinary backoff (not a slow one).
  #wake(online) {
    if (this.#state !== "reconnecting" || !this.#pending || !this.#canConnect()) return;
    if (this.#timer === null || (online && !this.#pending.slow)) {
      this.#open(this.#pending.why, this.#pending.fresh);
    }
  }

  async #open(why, fresh) {
    this.#cancelReconnect();
    this.#drop(1000, "reconnect");
    if (!this.#canConnect()) {
      this.#pending = { why, fresh, slow: false };
      this.#setState("reconnecting", { waiting: true });
      return;
    }
    const generation = ++this.#generation;
    this.#setState("connecting", { attempt: this.#attempt });
    let token = null;
    if (this.#o.token) {
      try {
        token = await this.#o.token({ reason: why, fresh, attempt: this.#attempt });
      } catch (error) {
        if (generation !== this.#generation) return;
        this.#emit("client:error", { error, during: "token" });
        return this.#closed({ code: undefined, reason: "token_error", opened: true });
      }
      if (generation !== this.#generation) return; // closed or restarted meanwhile
    }
    const since = this.#position.since;
    let ws;
    try {
      const url = withSince(resolveUrl(this.#url(this.#lastClose.rotate ?? false), this.#o.window?.location?.href), since);
      ws = new this.#o.WebSocket(url, subprotocols(token));
    } catch (error) {
      this.#emit("client:error", { error, during: "connect" });
      return this.#stop({ cause: "invalid_url" });
    }
    const c = { ws, since, opened: false, ready: false, positioned: false, seq: 0, timers: new Set(), reauthTries: 0 };
    this.#conn = c;
    const connectTimer = this.#later(c, this.#o.connectTimeout, () => {
      this.#drop(1000, "connect_timeout");
      this.#closed({ code: 1006, reason: "connect_timeout", opened: false });
    });
    ws.onopen = () => {
      if (c !== this.#conn) return;
      c.opened = true;
      this.#o.clearTimeout(connectTimer);
      c.timers.delete(connectTimer);
      if (!this.#o.waitForReady) this.#ready(c);
    };
    ws.onmessage = (message) => c === this.#conn && this.#frame(c, message.data);
    ws.onerror = noop; // a close event always follows
    ws.onclose = (event) => {
      if (c !== this.#conn) return;
      this.#drop();
      this.#closed({ code: event.code, reason: event.reason, opened: c.opened });
    };
  }

  // A timer that dies with its connection.
  #later(c, ms, fn) {
    const id = this.#o.setTimeout(() => {
      c.timers.delete(id);
      if (c === this.#conn) fn();
    }, ms);
    c.timers.add(id);
    return id;
  }

  // Forgets the current connection (its late events are ignored) and closes it.
  #drop(code, reason) {
    const c = this.#conn;
    if (!c) return;
    this.#conn = null;
    for (const id of c.timers) this.#o.clearTimeout(id);
    c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
    if (code !== undefined) {
      try {
        c.ws.close(code, reason);
      } catch {
        c.ws.close(); // a code or reason the browser refuses: close plainly
      }
    }
  }

  #cancelReconnect() {
    if (this.#timer !== null) this.#o.clearTimeout(this.#timer);
    this.#timer = null;
    this.#pending = null;
  }

  #closed({ code, reason, opened }) {
    if (!this.#wanted) return;
    this.#authFailures = code === 4401 ? this.#authFailures + 1 : 0;
    const plan = planReconnect(
      { code, attempt: this.#attempt, authFailures: this.#authFailures, opened },
      this.#o,
    );
    if (plan.stop) return this.#stop({ cause: plan.cause, code, reason });
    if (plan.rotate) this.#urlIndex++;
    this.#attempt++;
    this.#stats.reconnects++;
    this.#lastClose = { code, reason, rotate: plan.rotate };
    const why = plan.fresh ? "unauthorized" : "reconnect";
    this.#schedule(plan.delay, { why, fresh: plan.fresh, slow: classifyClose(code).action === "slow" }, { code, reason });
  }

  #schedule(delay, pending, detail) {
    this.#cancelReconnect();
    this.#pending = pending;
    if (!this.#canConnect()) return this.#setState("reconnecting", { ...detail, waiting: true });
    this.#timer = this.#o.setTimeout(() => {
      this.#timer = null;
      this.#open(pending.why, pending.fresh);
    }, delay);
    this.#setState("reconnecting", { ...detail, delay, attempt: this.#attempt });
  }

  #stop(detail) {
    this.#wanted = false;
    this.#generation++;
    this.#cancelReconnect();
    this.#drop(1000, "");
    this.#watchPage(false);
    this.#setState("closed", detail);
    this.#emit("client:stopped", detail);
    this.#settle(new StoppedError(detail));
  }

  // Leaves a connection that lost events and resumes from the position.
  #resume(reason) {
    this.#stats.resumes++;
    this.#drop(1000, "resume");
    const delay = this.#gapStreak === 0 ? 0 : backoffDelay(this.#gapStreak - 1, this.#o.backoff, this.#o.random);
    this.#gapStreak++;
    this.#lastClose = { reason, rotate: false };
    this.#schedule(delay, { why: "resume", fresh: false, slow: false }, { reason });
  }

  #resync(reason) {
    this.#emit("client:resync", { reason, ...this.position });
  }

  #frame(c, data) {
    if (typeof data !== "string") return; // the protocol is JSON text frames
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      return this.#emit("client:error", { error, during: "parse" });
    }
    if (!frame || typeof frame !== "object") return;
    const seq = checkSeq(c.seq, frame.seq);
    if (seq === "duplicate") return void this.#stats.duplicates++;
    if (seq !== "none") c.seq = frame.seq;
    if (seq === "gap") {
      this.#stats.seqGaps++;
      // With a position, `off` tells whether a stream event was lost.
      if (!this.#position.since) this.#resync("seq_gap");
    }
    const type = eventName(frame.type);
    // Before `ready` a server writes only its control frames (a `gap`, say):
    // any other first frame means a server without ready frames (and
    // without resume).
    const early = !c.positioned && CONTROL.has(type);
    const resync = c.positioned || early ? null : this.#ready(c, type === "ready" ? frame : {});
    if (c !== this.#conn) return; // a state listener closed the client
    // The ready frame's `off` is the stream's head, not an event of its own.
    const verdict = type === "ready" ? "deliver" : this.#position.accept(frame);
    if (verdict === "duplicate") return void this.#stats.duplicates++;
    if (verdict === "gap") {
      this.#stats.gaps++;
      return this.#resume("off_gap");
    }
    if (verdict === "jump") {
      this.#stats.gaps++;
      this.#resync("off_gap");
    } else if (frame.off !== undefined && type !== "ready") {
      this.#gapStreak = 0; // events flow in order again
    }
    if (type === "reauth_required") this.#reauth(c);
    else if (type === "reauth_ok") c.reauthTries = 0;
    else if (type === "reauth_failed") this.#reauthFailed(c);
    this.#emit(type, frame);
    this.#emit("*", frame, type);
    if (c !== this.#conn) return;
    if (resync) this.#resync(resync);
    if (type === "gap") {
      this.#stats.gaps++;
      if (this.#position.since) this.#resume("gap");
      else this.#resync("gap");
    }
  }

  // The connection is ready. `frame`: its ready frame ({} for another first
  // frame; undefined at open without waitForReady, positioned by the first
  // frame). Returns why the app must resync, or null.
  #ready(c, frame) {
    let resync = null;
    if (frame) {
      c.positioned = true;
      const result = this.#position.ready(frame, c.since);
      if (!result.recovered && (c.since || this.#positioned)) resync = result.reason;
      this.#positioned = true;
    }
    if (!c.ready) {
      c.ready = true;
      this.#attempt = 0;
      this.#authFailures = 0;
      this.#lastClose = {};
      this.#setState("ready", { recovered: frame?.recovered === true && !resync });
      this.#settle();
    }
    return resync;
  }

  async #reauth(c) {
    if (!this.#o.token) return;
    let token;
    try {
      token = await this.#o.token({ reason: "reauth", fresh: true, attempt: c.reauthTries });
    } catch (error) {
      return this.#emit("client:error", { error, during: "reauth" });
    }
    if (c === this.#conn && token && c.ws.readyState === OPEN) {
      c.ws.send(JSON.stringify({ type: "reauth", token: String(token) }));
    }
  }

  #reauthFailed(c) {
    if (c.reauthTries >= this.#o.reauthRetries) {
      // The server closes with 4401 at expiry; the reconnect fetches a fresh token.
      return this.#emit("client:error", { error: new Error("reauth_failed"), during: "reauth" });
    }
    const delay = backoffDelay(c.reauthTries++, this.#o.backoff, this.#o.random);
    this.#later(c, delay, () => this.#reauth(c));
  }
}
