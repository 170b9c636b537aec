// The signaling client: one WebSocket to the node's /ws, JSON messages in
// and out. Messages are handled one at a time, in arrival order: a
// candidate must not overtake the description it belongs to, so each
// handler (which may await) finishes before the next message starts.

export class Signaling {
  /**
   * @param {(msg: object) => Promise<void> | void} onMessage called per message, in order
   * @param {(event: CloseEvent, opened: boolean) => void} onClose the connection ended
   */
  constructor(onMessage, onClose) {
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.ws = null;
    this.opened = false;
    this.queue = Promise.resolve();
  }

  /** Connects; resolves once the socket is open (rejects if it never opens). */
  connect(token) {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = token ? `?token=${encodeURIComponent(token)}` : '';
    const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.onopen = () => { this.opened = true; resolve(); };
      ws.onclose = (e) => {
        if (!this.opened) reject(new Error(`the node refused the connection (${e.code})`));
        if (this.ws === ws) this.onClose(e, this.opened);
      };
      ws.onmessage = (e) => {
        let msg;
        try { msg = JSON.parse(e.data); } catch { return; }
        this.queue = this.queue.then(() => this.onMessage(msg)).catch((err) => console.error(err));
      };
    });
  }

  get state() {
    return this.ws ? ['connecting', 'open', 'closing', 'closed'][this.ws.readyState] : 'closed';
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Closes without reporting it through onClose (the user left). */
  close() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
  }
}
