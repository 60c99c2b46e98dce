// Live updates: the WebSocket first, then Server-Sent Events, then polling.
//
// - WebSocket /api/monitoring/websocket: the first message is a snapshot;
//   a filter is sent as {"subscribe": {"env": [...], "workflow": [...]}}.
//   A connection that was open and drops is reopened with backoff.
// - SSE /api/monitoring/events: the same events, as `data:` JSON (named
//   events are accepted too). Used when the WebSocket never opens.
// - Polling every 10 s when neither opens; live is tried again every minute,
//   so a page left open picks the endpoints up once the collector has them.

export const WEBSOCKET_PATH = "/api/monitoring/websocket";
export const EVENTS_PATH = "/api/monitoring/events";
export const POLL_SECONDS = 10;
const RETRY_LIVE_MS = 60_000;
const SILENCE_MS = 75_000; // no WebSocket message at all (the server pings every 15 s) for this long: the connection is dead
const SSE_RECONNECT_MS = 15_000;
const EVENT_TYPES = ["snapshot", "run", "state", "alert", "ping"];

export class Live {
  constructor({ onEvent, onTransport, poll }) {
    this.onEvent = onEvent;
    this.onTransport = onTransport;
    this.poll = poll;
    this.subscription = null;
    this.transport = "connecting";
    this.backoff = 1000;
    this.timers = new Set();
  }

  start() {
    this.openWebSocket();
  }

  /** Ask the server for fewer events; null asks for everything. The page filters what it gets either way. */
  subscribe(filter) {
    this.subscription = filter;
    this.sendSubscription();
  }

  sendSubscription() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ subscribe: this.subscription || {} }));
    }
  }

  setTransport(name) {
    if (this.transport === name) return;
    this.transport = name;
    this.onTransport(name);
  }

  later(fn, ms) {
    const id = setTimeout(() => { this.timers.delete(id); fn(); }, ms);
    this.timers.add(id);
    return id;
  }

  clearTimers() {
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  deliver(data, type) {
    let event;
    try {
      event = typeof data === "string" ? JSON.parse(data) : data;
    } catch {
      return;
    }
    this.lastHeard = Date.now();
    // An array is a batch of events (the server's ?batch=1; not asked for here, but read all the same).
    for (const one of Array.isArray(event) ? event : [event]) {
      if (!one || typeof one !== "object") continue;
      if (!one.type && type && type !== "message") one.type = type;
      this.onEvent(one);
    }
  }

  watchSilence(close) {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      if (Date.now() - this.lastHeard >= SILENCE_MS) close();
      else this.watchSilence(close);
    }, SILENCE_MS);
  }

  openWebSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}${WEBSOCKET_PATH}`);
    } catch {
      this.openEventSource();
      return;
    }
    this.ws = ws;
    // It worked once the first message (the snapshot) came: a proxy may accept the upgrade and close at once.
    let worked = false;
    ws.addEventListener("open", () => {
      this.lastHeard = Date.now();
      if (this.subscription) this.sendSubscription();
      this.watchSilence(() => ws.close());
    });
    ws.addEventListener("message", (message) => {
      if (!worked) {
        worked = true;
        this.backoff = 1000;
        this.setTransport("websocket");
      }
      this.deliver(message.data);
    });
    ws.addEventListener("close", () => {
      clearTimeout(this.silenceTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      if (worked) {
        // It worked before: the collector restarted or the network blinked. Try the same way again.
        this.setTransport("reconnecting");
        this.later(() => this.openWebSocket(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 30_000);
      } else {
        this.openEventSource();
      }
    });
  }

  openEventSource() {
    if (typeof EventSource === "undefined") {
      this.startPolling();
      return;
    }
    const source = new EventSource(EVENTS_PATH);
    this.source = source;
    let opened = false;
    const stop = () => {
      source.close();
      if (this.source === source) this.source = null;
      this.startPolling();
    };
    source.addEventListener("open", () => {
      // No silence watch here: the server's heartbeats are SSE comments, which never reach the page.
      opened = true;
      this.setTransport("sse");
    });
    source.addEventListener("message", (message) => this.deliver(message.data, "message"));
    for (const type of EVENT_TYPES) source.addEventListener(type, (message) => this.deliver(message.data, type));
    source.addEventListener("error", () => {
      if (this.source !== source) return;
      if (!opened || source.readyState === EventSource.CLOSED) {
        stop();
        return;
      }
      // EventSource reconnects by itself; give it a while before polling instead.
      this.setTransport("reconnecting");
      this.later(() => {
        if (this.source === source && source.readyState !== EventSource.OPEN) stop();
      }, SSE_RECONNECT_MS);
    });
  }

  startPolling() {
    this.setTransport("poll");
    clearInterval(this.pollTimer);
    this.pollTimer = setInterval(() => this.poll(), POLL_SECONDS * 1000);
    this.poll();
    this.later(() => {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
      this.openWebSocket();
    }, RETRY_LIVE_MS);
  }

  stop() {
    this.clearTimers();
    clearTimeout(this.silenceTimer);
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(); }
    if (this.source) { this.source.close(); this.source = null; }
  }
}
