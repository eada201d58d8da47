// Hand-written declarations for ws-lifecycle.js. The wire protocol:
// docs/protocol.md; the client: docs/client.md.

// ------------------------------------------------------------------ frames

/** Every server frame: one JSON envelope. Clients ignore fields they do not know. */
export interface Envelope<T extends string | number = string> {
  /** The envelope version, 1. */
  v: number;
  /** This connection's frame counter: 1, 2, 3 … with no gap; a new connection starts at 1. */
  seq: number;
  /** The event's name (legacy servers send agent events as 1 … 5). */
  type: T;
  /** The frame's offset in the user's stream (events addressed to the user only; servers with resume). */
  off?: number;
  payload?: unknown;
}

export type AgentEventType =
  | "agent_started"
  | "agent_thinking"
  | "tool_executing"
  | "tool_completed"
  | "agent_completed";

/** One of the five agent events of a run. */
export interface AgentEvent<T extends AgentEventType = AgentEventType> extends Envelope<T> {
  thread_id: string;
  /** A run id names its thread. */
  run_id: string;
  payload: unknown;
}

/** The first frame of a ready connection (the demo application's, with resume's fields). */
export interface ReadyFrame extends Envelope<"ready"> {
  connection_id?: string;
  user?: string;
  /** Names one life of the user's stream (resume). */
  epoch?: string;
  /** The stream's latest offset when this connection started listening; 0 for an empty stream. */
  off?: number;
  /** Whether the `since` position was replayed (resume). */
  recovered?: boolean;
}

/**
 * The server may have missed events for this connection's user; the client
 * leaves the connection and resumes with `since`. May come ahead of `ready`.
 */
export interface GapFrame extends Envelope<"gap"> {
  payload: {
    reason: "backplane_reconnected" | "backplane_lost_events" | "stream_restarted" | "stream_hole" | (string & {});
  };
}

export interface ReauthRequiredFrame extends Envelope<"reauth_required"> {
  payload: { expires_at: number };
}
export interface ReauthOkFrame extends Envelope<"reauth_ok"> {
  payload: { expires_at: number | null };
}
export interface ReauthFailedFrame extends Envelope<"reauth_failed"> {
  payload: { code: string };
}

/** The demo application's message frame. */
export interface MessageFrame extends Envelope<"message"> {
  from: string;
  payload: string;
}

/** Frames by event name, for `client.on(name, …)`. Extend it for your own events. */
export interface FrameMap {
  ready: ReadyFrame;
  gap: GapFrame;
  reauth_required: ReauthRequiredFrame;
  reauth_ok: ReauthOkFrame;
  reauth_failed: ReauthFailedFrame;
  message: MessageFrame;
  agent_started: AgentEvent<"agent_started">;
  agent_thinking: AgentEvent<"agent_thinking">;
  tool_executing: AgentEvent<"tool_executing">;
  tool_completed: AgentEvent<"tool_completed">;
  agent_completed: AgentEvent<"agent_completed">;
}

/** Any frame: a known one, or a custom event. */
export type Frame = FrameMap[keyof FrameMap] | (Envelope & Record<string, unknown>);

export declare const AGENT_EVENTS: readonly [
  "agent_started",
  "agent_thinking",
  "tool_executing",
  "tool_completed",
  "agent_completed",
];

// ------------------------------------------------------------- close codes

export declare const CloseCode: {
  readonly NORMAL: 1000;
  readonly GOING_AWAY: 1001;
  readonly PROTOCOL_ERROR: 1002;
  readonly NO_STATUS: 1005;
  readonly ABNORMAL: 1006;
  readonly INVALID_PAYLOAD: 1007;
  readonly MESSAGE_TOO_BIG: 1009;
  readonly INTERNAL_ERROR: 1011;
  readonly RESTART: 1012;
  readonly TRY_AGAIN_LATER: 1013;
  readonly PROTOCOL_INVALID: 4400;
  readonly UNAUTHORIZED: 4401;
  readonly FORBIDDEN: 4403;
  readonly AUTH_TIMEOUT: 4408;
  readonly SLOW_CONSUMER: 4409;
  readonly RATE_LIMITED: 4429;
};
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** What a close asks of the client. */
export interface CloseDecision {
  /** "retry": backoff; "slow": the longer backoff; "refresh": a fresh token, at once; "stop": no reconnect. */
  action: "retry" | "slow" | "refresh" | "stop";
  /** Move to the next server URL (1001, 1012, 1013). */
  rotate: boolean;
}
export declare function classifyClose(code: number | undefined): CloseDecision;

export type ReconnectPlan =
  | { stop: true; cause: "close_code" | "max_attempts" }
  | { stop: false; delay: number; fresh: boolean; rotate: boolean };

export declare function planReconnect(
  close: { code: number | undefined; attempt: number; authFailures?: number; opened?: boolean },
  options?: {
    backoff?: BackoffSchedule;
    slowBackoff?: BackoffSchedule;
    maxAttempts?: number;
    random?: () => number;
  },
): ReconnectPlan;

// ----------------------------------------------------------------- backoff

/** Delays in milliseconds: uniform in [min, min(cap, base·2^attempt)]. */
export interface BackoffSchedule {
  base: number;
  cap: number;
  min?: number;
}
export declare const DEFAULT_BACKOFF: Readonly<Required<BackoffSchedule>>;
export declare const DEFAULT_SLOW_BACKOFF: Readonly<Required<BackoffSchedule>>;
export declare function backoffDelay(
  attempt: number,
  schedule?: BackoffSchedule,
  random?: () => number,
): number;

// ------------------------------------------------------------- subprotocol

export declare const MARKER: "jwt-auth";
export declare function base64url(text: string): string;
/** `jwt.<token>` for a compact JWT, else `jwt.<base64url of the token>`. */
export declare function tokenSubprotocol(token: string): string;
/** `["jwt-auth", "jwt.…"]`, or `[]` without a token. */
export declare function subprotocols(token: string | null | undefined): string[];

// --------------------------------------------------------- stream position

export interface Position {
  epoch: string | null;
  off: number | null;
}

export declare function formatSince(epoch: unknown, off: unknown): string | null;
export declare function withSince(url: string, since: string | null): string;
export declare function resolveUrl(url: string, base?: string): string;
export declare function checkSeq(last: number, seq: unknown): "ok" | "duplicate" | "gap" | "none";
export declare function eventName(type: string | number): string;

export type ResyncReason = "not_recovered" | "epoch_changed" | "no_resume" | "gap" | "off_gap" | "seq_gap";

export declare class StreamPosition implements Position {
  constructor(start?: { epoch: string; off: number } | null);
  epoch: string | null;
  off: number | null;
  readonly since: string | null;
  ready(
    frame: Partial<ReadyFrame>,
    sent: string | null,
  ): { recovered: true } | { recovered: false; reason: "not_recovered" | "epoch_changed" | "no_resume" };
  accept(frame: { off?: unknown }): "deliver" | "duplicate" | "gap" | "jump";
}

// ------------------------------------------------------------------ client

export type ClientState = "connecting" | "ready" | "reconnecting" | "closed";

/** What the token provider is told. */
export interface TokenRequest {
  /**
   * "connect": the first connect; "reconnect": after a drop; "resume": after a gap;
   * "unauthorized": after close 4401; "reauth": the server asked (`reauth_required`).
   */
  reason: "connect" | "reconnect" | "resume" | "unauthorized" | "reauth";
  /** True when a cached token will not do (4401, reauth): fetch a new one. */
  fresh: boolean;
  attempt: number;
}

export interface UrlRequest {
  attempt: number;
  /** The last close asked for another node (1001, 1012, 1013, or the socket never opened). */
  rotate: boolean;
  code?: number;
  reason?: string;
}

/** The subset of the WebSocket constructor the client uses (inject a fake in tests). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** The parts of `window` the client watches. */
export interface PageLike {
  addEventListener?(type: "online", listener: (event: { type: string }) => void): void;
  removeEventListener?(type: "online", listener: (event: { type: string }) => void): void;
  navigator?: { onLine?: boolean };
  document?: {
    visibilityState?: string;
    addEventListener?(type: "visibilitychange", listener: (event: { type: string }) => void): void;
    removeEventListener?(type: "visibilitychange", listener: (event: { type: string }) => void): void;
  };
  location?: { href: string };
}

export interface ClientOptions {
  /** One URL, several (the next one after 1001/1012/1013 or a failed open), or a function asked on every connect. `ws(s):`, `http(s):` or relative to the page. */
  url: string | readonly string[] | ((request: UrlRequest) => string);
  /** Called for every connect and on every reauth; the token travels as the `jwt.` subprotocol, never in the URL. Omit for cookie authentication. */
  token?: (request: TokenRequest) => string | null | undefined | Promise<string | null | undefined>;
  /** Ordinary backoff (drops, 1011, 1012, 4408, 4409 …). Default `{ base: 500, cap: 30000, min: 0 }`. */
  backoff?: Partial<BackoffSchedule>;
  /** Longer backoff for 4429 and 1013. Default `{ base: 5000, cap: 120000, min: 2000 }`. */
  slowBackoff?: Partial<BackoffSchedule>;
  /** Reconnects without a ready connection before the client stops (`client:stopped`, cause "max_attempts"). Default Infinity. */
  maxAttempts?: number;
  /** Retries after `reauth_failed`, per connection. Default 3. */
  reauthRetries?: number;
  /** Milliseconds for a socket to open. Default 10000. */
  connectTimeout?: number;
  /** Ready on the `ready` frame (or any other first frame that is not a control frame: `gap`, `reauth_*`); false: ready at open. Default true. */
  waitForReady?: boolean;
  /** While the page is hidden, reconnect once, then wait until it is visible. Default true. */
  pauseWhenHidden?: boolean;
  /** Where to resume from on the first connect (a persisted `client.position`). */
  position?: { epoch: string; off: number } | null;
  /** Injectable for tests and other runtimes; default the globals. */
  WebSocket?: WebSocketConstructor;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  random?: () => number;
  window?: PageLike | null;
  /** Where a throwing listener's error goes. Default `reportError`. */
  reportError?: (error: unknown) => void;
}

export interface StateEvent {
  state: ClientState;
  previous: ClientState;
  /** The close code that led here (reconnecting, closed). */
  code?: number;
  reason?: string;
  /** Milliseconds until the reconnect (reconnecting). */
  delay?: number;
  attempt?: number;
  /** Reconnecting, waiting for the page to be online or visible. */
  waiting?: boolean;
  /** Ready: whether the resume was replayed. */
  recovered?: boolean;
  /** Closed: why. */
  cause?: StopCause | "client";
}

export interface ResyncEvent extends Position {
  /** Events may have been missed and cannot be replayed: fetch your state. */
  reason: ResyncReason;
}

export type StopCause = "close_code" | "max_attempts" | "invalid_url";

export interface StoppedEvent {
  cause: StopCause;
  code?: number;
  reason?: string;
}

export interface ErrorEvent {
  error: unknown;
  during: "token" | "reauth" | "parse" | "connect";
}

/** The client's own events, beside the frames' (the "client:" prefix keeps them apart from frame types). */
export interface ClientEventMap {
  "client:state": StateEvent;
  "client:resync": ResyncEvent;
  "client:stopped": StoppedEvent;
  "client:error": ErrorEvent;
}

/** The rejection of `connect()`, and what `client:stopped` carries. */
export declare class StoppedError extends Error {
  constructor(detail: { cause: StopCause | "client"; code?: number; reason?: string });
  readonly cause: StopCause | "client";
  readonly code?: number;
  readonly reason?: string;
}

export interface ClientStats {
  duplicates: number;
  gaps: number;
  seqGaps: number;
  resumes: number;
  reconnects: number;
}

export declare class WsLifecycleClient {
  constructor(options: ClientOptions);
  readonly state: ClientState;
  readonly position: Position;
  readonly stats: ClientStats;

  on<K extends keyof ClientEventMap>(type: K, listener: (event: ClientEventMap[K]) => void): () => void;
  on<K extends keyof FrameMap>(type: K, listener: (frame: FrameMap[K]) => void): () => void;
  on(type: "*", listener: (frame: Frame, type: string) => void): () => void;
  on(type: string, listener: (frame: Envelope & Record<string, any>) => void): () => void;

  off(type: string, listener?: (...args: any[]) => void): void;

  /** Starts connecting; resolves when ready, rejects with `StoppedError` if the client stops first. */
  connect(): Promise<void>;
  /** JSON-encodes (unless a string) and sends when ready; false, and nothing sent, otherwise. */
  send(message: unknown): boolean;
  /** Closes for good (until `connect()`); the position is kept. */
  close(code?: number, reason?: string): void;
}
