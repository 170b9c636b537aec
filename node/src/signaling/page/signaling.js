// The signaling client: one WebSocket to the node's /ws, JSON messages in
// and out. Messages are handled one at a time, in arrival order: a
// candidate must not overtake the description it belongs to, so each
// handler (which may await) finishes before the next message starts.
//
// A browser cannot send WebSocket pings, so the client sends `ping` (the
// node answers `pong`) every PING_EVERY_MS; a line silent for DEAD_AFTER_MS
// is closed as dead, which the page treats like any lost connection.

const PING_EVERY_MS = 5000;
const DEAD_AFTER_MS = 15000;

export class Signaling {
  /**
   * @param {(msg: object) => Promise<void> | void} onMessage called per message, in order
   * @param {(event: CloseEvent) => void} onClose an open connection ended (not by close())
   */
  constructor(onMessage, onClose) {
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.ws = null;
    this.opened = false;
    this.queue = Promise.resolve();
    this.heard = 0;
    this.keepalive = null;
  }

  /**
   * Connects to `url` (default: this page's node); resolves once the
   * socket is open (rejects if it never opens).
   */
  connect(token, url) {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = token ? `?token=${encodeURIComponent(token)}` : '';
    const ws = new WebSocket(`${url || `${scheme}://${location.host}/ws`}${query}`);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.onopen = () => {
        this.opened = true;
        this.heard = Date.now();
        this.keepalive = setInterval(() => this.check(ws), PING_EVERY_MS);
        resolve();
      };
      ws.onclose = (e) => {
        clearInterval(this.keepalive);
        // One report per connection: a refusal through the promise, a
        // close of an open line through onClose.
        if (!this.opened) reject(new Error(`the node refused the connection (${e.code})`));
        else if (this.ws === ws) this.onClose(e);
      };
      ws.onmessage = (e) => {
        this.heard = Date.now();
        let msg;
        try { msg = JSON.parse(e.data); } catch { return; }
        if (msg.type === 'pong') return;
        this.queue = this.queue.then(() => this.onMessage(msg)).catch((err) => console.error(err));
      };
    });
  }

  /** Pings; closes a line that has been silent too long. */
  check(ws) {
    if (Date.now() - this.heard > DEAD_AFTER_MS) ws.close(4000, 'the node stopped answering');
    else this.send({ type: 'ping' });
  }

  get state() {
    return this.ws ? ['connecting', 'open', 'closing', 'closed'][this.ws.readyState] : 'closed';
  }

  send(msg) {
    this.sendText(JSON.stringify(msg));
  }

  /** Sends a message that is JSON text already. */
  sendText(text) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** Closes without reporting it through onClose (the user left). */
  close() {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.keepalive);
    if (ws) ws.close();
  }
}
