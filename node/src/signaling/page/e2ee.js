// End-to-end encryption for the page. A Worker (e2ee-worker.js) holds the
// page's MLS group membership and SFrame keys, and every encoded frame of
// every sender and receiver runs through it (RTCRtpScriptTransform, or
// createEncodedStreams in a browser without it). The node only orders the
// group's commits (its MLS delivery service) and forwards ciphertext.
//
// The worker is watched: an error inside it, or a ping unanswered for
// DEAD_AFTER_MS once it is running, and the page fails closed (its senders
// send nothing), starts a fresh worker, which rejoins the group with a new key
// package, and resumes sending once the new worker has the group's key.
// A worker that fails again before it got there is restarted with
// exponential backoff. A member that gets no welcome asks again.

const PING_EVERY_MS = 100;
const DEAD_AFTER_MS = 500;
/** A new worker has this long to compile the E2EE module and say `ready`. */
const READY_WITHIN_MS = 15000;
/** A worker that fails again before it is back in the group waits longer each time (doubling up to the max). */
const RESTART_BACKOFF_MS = 250;
const RESTART_BACKOFF_MAX_MS = 10000;
/**
 * A member that asked into the group and got no welcome this long asks
 * again with a fresh key package (its first may have been lost: a member
 * that would have added it restarted, or left), waiting twice as long
 * each time up to the max.
 */
const WELCOME_WITHIN_MS = 5000;
const WELCOME_WITHIN_MAX_MS = 30000;
/** Failures kept for the page and tests, the last ones. */
const FAILURES_KEPT = 20;
/** Lines of the worker's log kept, the last ones, each cut to LOG_LINE_CHARS (a peer's message is in some). */
const LOG_KEPT = 200;
const LOG_LINE_CHARS = 300;

/** Whether the browser offers RTCRtpScriptTransform (else createEncodedStreams). */
export const scriptTransform = typeof RTCRtpScriptTransform !== 'undefined';

export class E2ee {
  /**
   * @param {string} room
   * @param {string} user
   * @param {(text: string) => void} send sends a message (JSON text) to the node
   * @param {() => void} onChange the group's state changed
   */
  constructor(room, user, send, onChange) {
    this.room = room;
    this.user = user;
    this.send = send;
    this.onChange = onChange;
    // 'joining' (no key yet) | 'encrypted' | 'restarting'
    this.state = 'joining';
    this.epoch = null;
    this.safetyNumber = null;
    this.members = [];
    this.restarts = 0;
    this.failures = []; // { reason, at, back }: performance.now() of the failure and of the rejoin
    this.failing = 0; // failures since the last worker that got into the group
    this.pending = null; // the restart's timer, during a backoff
    this.counters = null; // the worker's, from its last pong
    this.pc = null; // the connection whose frames the worker handles
    this.protected = new WeakSet(); // its senders and receivers already handed to the worker
    this.roomMembers = []; // who the node says is in the room (for a new worker)
    this.onHold = null; // (held: boolean) => void: stop or resume sending
    this.onLog = null; // (text: string) => void: a line of the worker's log
    this.onUnrecoverable = null; // (why: string) => void: rebuild the connection (no RTCRtpScriptTransform)
    this.log = []; // the last LOG_KEPT lines
    this.worker = null;
    this.waiting = new Map(); // reply type -> resolve
    this.seatedAt = null; // when the worker was last seated without a key
    this.welcomeWithin = WELCOME_WITHIN_MS;
    this.spawn();
    this.watchdog = setInterval(() => this.check(), PING_EVERY_MS);
  }

  spawn() {
    const worker = new Worker('/e2ee/worker.js', { type: 'module' });
    this.worker = worker;
    this.ready = false;
    this.spawnedAt = performance.now();
    this.pinged = null; // when the unanswered ping was sent
    worker.onmessage = ({ data }) => this.fromWorker(worker, data);
    worker.onerror = (e) => this.failed(worker, e.message || 'the worker failed');
    worker.postMessage({ type: 'start', room: this.room, user: this.user });
  }

  fromWorker(worker, data) {
    if (worker !== this.worker) return; // a worker already given up on
    switch (data.type) {
      case 'send':
        this.send(data.text);
        break;
      case 'status':
        this.epoch = data.epoch;
        this.safetyNumber = data.safetyNumber;
        this.members = data.members;
        // The group's stage starting over (out of step with the group) has
        // no key until it is welcomed back: nothing is sealed meanwhile.
        if (data.epoch === null && this.state === 'encrypted') this.state = 'joining';
        if (data.epoch !== null && this.state !== 'encrypted') {
          if (this.state === 'restarting') this.failures[this.failures.length - 1].back = performance.now();
          this.failing = 0;
          this.welcomeWithin = WELCOME_WITHIN_MS;
          this.state = 'encrypted';
          if (this.onHold) this.onHold(false);
        }
        this.onChange();
        break;
      case 'ready':
        this.ready = true;
        break;
      case 'log': {
        const line = String(data.text).slice(0, LOG_LINE_CHARS);
        this.log.push(line);
        if (this.log.length > LOG_KEPT) this.log.shift();
        if (this.onLog) this.onLog(line);
        break;
      }
      case 'pong':
        this.pinged = null;
        this.counters = data.counters;
        break;
      case 'failed':
        this.failed(worker, data.reason);
        break;
      default: {
        const resolve = this.waiting.get(data.type);
        this.waiting.delete(data.type);
        if (resolve) resolve(data);
      }
    }
  }

  /** A room message: the group's business ones go to the worker. */
  signal(msg) {
    if (msg.type === 'joined') this.roomMembers = msg.members.map((m) => ({ user: m.user, e2ee: Boolean(m.e2ee) }));
    else if (msg.type === 'presence') {
      this.roomMembers = this.roomMembers.filter((m) => m.user !== msg.user);
      if (msg.state === 'joined') this.roomMembers.push({ user: msg.user, e2ee: Boolean(msg.e2ee) });
    }
    // A message during a restart's backoff is not lost: the new worker is
    // seated from roomMembers and hears the group's state from the others.
    if (msg.type === 'joined') this.seatedAt = performance.now();
    if (this.worker && /^(joined|presence|error|mls-)/.test(msg.type)) this.worker.postMessage({ type: 'signal', text: JSON.stringify(msg) });
  }

  /** A new peer connection: its senders and receivers are handed over as they come. */
  useConnection(pc) {
    this.pc = pc;
    this.protected = new WeakSet();
  }

  /** Runs `target`'s (an RTCRtpSender or RTCRtpReceiver) frames through the worker. */
  protect(target, side, kind) {
    if (this.protected.has(target)) return; // a reused transceiver: its streams are handed over already
    this.protected.add(target);
    this.attach(target, side, kind);
  }

  attach(target, side, kind) {
    if (!this.worker) return; // restarting: the new worker takes every endpoint
    if (scriptTransform) {
      target.transform = new RTCRtpScriptTransform(this.worker, { side, kind });
    } else {
      const { readable, writable } = target.createEncodedStreams();
      this.worker.postMessage({ type: 'streams', readable, writable, side, kind }, [readable, writable]);
    }
  }

  /**
   * The watchdog. A worker is dead when a ping has gone unanswered for
   * DEAD_AFTER_MS, timed from the ping (a hidden tab runs timers as
   * rarely as once a minute; silence between pings means nothing).
   */
  check() {
    if (!this.worker) return;
    const now = performance.now();
    if (!this.ready) {
      if (now - this.spawnedAt > READY_WITHIN_MS) this.failed(this.worker, 'the worker did not start');
    } else if (this.state !== 'encrypted' && this.seatedAt !== null && now - this.seatedAt > this.welcomeWithin) {
      this.onLog?.(`no welcome into the group within ${this.welcomeWithin / 1000} s: asking again`);
      this.welcomeWithin = Math.min(WELCOME_WITHIN_MAX_MS, this.welcomeWithin * 2);
      this.seat();
    } else if (this.pinged !== null) {
      if (now - this.pinged > DEAD_AFTER_MS) this.failed(this.worker, 'the worker stopped answering');
    } else {
      this.pinged = now;
      this.worker.postMessage({ type: 'ping' });
    }
  }

  /**
   * The worker failed: send nothing until a fresh one is in the group.
   * Without RTCRtpScriptTransform a sender's streams cannot be handed to
   * a second worker; `onUnrecoverable` then rebuilds the connection.
   */
  failed(worker, reason) {
    if (worker !== this.worker) return;
    worker.terminate();
    this.worker = null;
    this.waiting.forEach((resolve) => resolve(null)); // its answers will not come
    this.waiting.clear();
    this.restarts += 1;
    this.failures.push({ reason, at: performance.now(), back: null });
    if (this.failures.length > FAILURES_KEPT) this.failures.shift();
    this.state = 'restarting';
    this.epoch = this.safetyNumber = null;
    this.members = [];
    if (this.onHold) this.onHold(true);
    // The first restart is at once; one that fails again waits longer.
    const wait = this.failing === 0 ? 0 : Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_MS * 2 ** (this.failing - 1));
    this.failing += 1;
    this.pending = setTimeout(() => this.restart(), wait);
    this.onChange();
  }

  /** A fresh worker, seated as the page is: it asks back into the group. */
  restart() {
    this.pending = null;
    this.spawn();
    this.seat();
    if (!scriptTransform) {
      if (this.onUnrecoverable) this.onUnrecoverable(this.lastFailure);
      return;
    }
    // Every live sender and receiver of the connection, to the new worker.
    for (const t of this.pc ? this.pc.getTransceivers() : []) {
      if (t.stopped) continue;
      const kind = t.receiver.track.kind;
      if (t.direction === 'sendonly' || t.direction === 'sendrecv') this.attach(t.sender, 'send', kind);
      if (t.direction === 'recvonly' || t.direction === 'sendrecv') this.attach(t.receiver, 'receive', kind);
    }
  }

  /** Seats the worker's member as the page sits: without a group, it asks in. */
  seat() {
    this.seatedAt = performance.now();
    const joined = { type: 'joined', room: this.room, user: this.user, members: this.roomMembers };
    this.worker.postMessage({ type: 'signal', text: JSON.stringify(joined) });
  }

  /** Why the last worker failed. */
  get lastFailure() {
    const last = this.failures[this.failures.length - 1];
    return last ? last.reason : null;
  }

  /** One answer of the worker to a request (`sample`, `bench`). */
  ask(type, message = {}) {
    if (!this.worker) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiting.set(type, resolve);
      this.worker.postMessage({ ...message, type });
    });
  }

  /** Ends the worker for good (the page left the room). */
  close() {
    clearInterval(this.watchdog);
    clearTimeout(this.pending);
    if (this.worker) this.worker.terminate();
    this.worker = null;
  }
}
