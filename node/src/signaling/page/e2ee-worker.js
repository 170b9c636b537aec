// The E2EE worker: holds this page's one Member (plugins/e2ee-web, the
// edge node's E2EE stage compiled for the browser) and runs every encoded
// audio and video frame of the page's peer connection through it.
//
// From the page (e2ee.js): `start` (room and user), `signal` (each room
// message that concerns the group), `ping`, `sample`, `bench`; and the
// frames, through `RTCRtpScriptTransform` (`rtctransform` events) or, in a
// browser without it, as the streams of `createEncodedStreams()`.
// To the page: `send` (messages for the node), `status` (epoch, safety
// number, members), `pong` (frame counters), `log` (the stage's), `failed`.
//
// Fail closed: a frame is sent only sealed. Before the group has a key,
// after the worker failed, or when sealing fails, the frame is dropped.
// A frame that does not open is dropped too (never played as it came).
//
// Video frames (VP8) keep a copy of their first bytes in the clear, ahead
// of the SFrame: 10 for a keyframe, 3 otherwise. Chromium's VP8
// depacketizer reads them to tell keyframes and picture size; the copy is
// only a hint, as the whole frame is inside the SFrame and the receiver
// plays what it opens. Audio (Opus) is sealed whole, as the edge node does.

import init, { Member } from './medianode_e2ee_web.js';

// The stage's log (console.log through wasm-bindgen) goes to the page too.
const consoleLog = console.log.bind(console);
console.log = (...args) => {
  consoleLog(...args);
  self.postMessage({ type: 'log', text: args.join(' ') });
};

// The page's watchdog starts once the module is compiled and running.
const ready = init();
ready.then(() => self.postMessage({ type: 'ready' }), (e) => self.postMessage({ type: 'failed', reason: `the E2EE module does not load: ${e}` }));
let member = null;
let failed = null; // why, once an error made this worker's Member untrustworthy
// Frames by kind; held frames that opened later; the longest wait between
// two opened audio frames (a media gap, in ms, as a listener hears it).
const counters = { sealed: { audio: 0, video: 0 }, opened: { audio: 0, video: 0 }, released: 0, unsealed: 0, unopened: 0, longestAudioGapMs: 0 };
/**
 * Inbound frames that did not open, by tag, with the stream they belong
 * to: one sealed under an epoch this member has not reached is held by the
 * stage, and is passed on when the stage releases it. The last HELD_KEPT.
 */
const HELD_KEPT = 64;
const held = new Map(); // tag -> { frame, controller, kind }
let nextTag = 1;
let lastAudio = null;
/**
 * Plaintext kept for a leak check (tests/all/browser_e2ee.rs): the first
 * SAMPLE_BYTES of every SAMPLE_EVERY-th frame sealed, the last SAMPLE_KEPT.
 */
const SAMPLE_EVERY = 10;
const SAMPLE_KEPT = 64;
const SAMPLE_BYTES = 256;
const sample = { audio: [], video: [] };
let frameCount = 0;

/** Any error from the Member ends this worker's service: the page restarts it. */
function fail(error) {
  if (failed) return;
  failed = String(error && error.message ? error.message : error);
  member = null;
  self.postMessage({ type: 'failed', reason: failed });
}

/** One line per group message, in the page's log: what came and went. */
function trace(way, text) {
  let m;
  try { m = JSON.parse(text); } catch { return; }
  const parts = [way, m.type, m.state, m.user, m.from, m.code, m.epoch, m.joiners && `joiners=${m.joiners}`].filter((p) => p !== undefined && p !== null);
  self.postMessage({ type: 'log', text: parts.join(' ') });
}

function status() {
  if (!member) return;
  const epoch = member.epoch();
  self.postMessage({
    type: 'status',
    epoch: epoch === undefined ? null : Number(epoch),
    safetyNumber: epoch === undefined ? null : member.safetyNumber(),
    members: member.members(),
  });
}

self.onmessage = async ({ data }) => {
  await ready;
  try {
    switch (data.type) {
      case 'start':
        member = new Member(data.room, data.user, '{"aead": "wasm"}');
        break;
      case 'signal':
        if (!member) return;
        trace('in', data.text);
        for (const text of member.signal(data.text)) {
          trace('out', text);
          self.postMessage({ type: 'send', text });
        }
        status();
        break;
      case 'streams': // createEncodedStreams(): the page hands the streams over
        transform(data.readable, data.writable, data.side, data.kind);
        break;
      case 'ping':
        self.postMessage({ type: 'pong', counters });
        break;
      case 'sample':
        self.postMessage({ type: 'sample', sample });
        break;
      case 'bench':
        self.postMessage({ type: 'bench', result: bench(data.size, data.count) });
        break;
      default:
    }
  } catch (e) {
    fail(e);
  }
};

// RTCRtpScriptTransform: one event per sender or receiver.
self.onrtctransform = (event) => {
  const { readable, writable, options } = event.transformer;
  transform(readable, writable, options.side, options.kind);
};

function transform(readable, writable, side, kind) {
  const stream = new TransformStream({
    transform(frame, controller) {
      const data = new Uint8Array(frame.data);
      let out;
      if (side === 'send') out = seal(data, kind);
      else {
        const tag = nextTag;
        nextTag = (nextTag % 0xffffffff) + 1; // the stage keeps tags as u32
        out = open(data, kind, tag);
        if (!out) hold(tag, frame, controller, kind);
        release();
      }
      if (!out) return; // dropped (or held): never passed on as it came
      frame.data = out.buffer;
      controller.enqueue(frame);
    },
  });
  readable.pipeThrough(stream).pipeTo(writable).catch(() => {}); // ends with the sender or receiver
}

/** Bytes of a VP8 frame kept in the clear: the payload header's. */
function clearBytes(data, kind) {
  if (kind !== 'video' || data.length === 0) return 0;
  return (data[0] & 1) === 0 ? 10 : 3; // bit 0 of the frame tag: 0 for a keyframe
}

function seal(data, kind) {
  const sealed = member && safely(() => member.seal(data));
  if (!sealed) {
    counters.unsealed += 1;
    return null;
  }
  counters.sealed[kind] += 1;
  if (++frameCount % SAMPLE_EVERY === 0) {
    const kept = sample[kind] || (sample[kind] = []);
    kept.push(Array.from(data.subarray(0, SAMPLE_BYTES)));
    if (kept.length > SAMPLE_KEPT) kept.shift();
  }
  const clear = Math.min(clearBytes(data, kind), data.length);
  if (clear === 0) return sealed;
  const out = new Uint8Array(clear + sealed.length);
  out.set(data.subarray(0, clear));
  out.set(sealed, clear);
  return out;
}

function open(data, kind, tag) {
  const clear = clearBytes(data, kind);
  const opened = member && data.length > clear && safely(() => member.open(data.subarray(clear), tag));
  if (!opened) {
    counters.unopened += 1;
    return null;
  }
  heard(kind);
  return opened;
}

function hold(tag, frame, controller, kind) {
  held.set(tag, { frame, controller, kind });
  if (held.size > HELD_KEPT) held.delete(held.keys().next().value);
}

/** Passes on the held frames the stage opened since, each to its stream. */
function release() {
  for (let r = member && safely(() => member.takeReleased()); r; r = member && safely(() => member.takeReleased())) {
    const { tag, payload } = r;
    r.free(); // wasm-bindgen objects live in the module's memory until freed
    const entry = held.get(tag);
    held.delete(tag);
    if (!entry) continue;
    entry.frame.data = payload.buffer;
    try {
      entry.controller.enqueue(entry.frame);
      counters.released += 1;
      heard(entry.kind);
    } catch {
      // Its stream has ended (the receiver went away).
    }
  }
}

function heard(kind) {
  counters.opened[kind] += 1;
  if (kind === 'audio') {
    const now = performance.now();
    if (lastAudio !== null) counters.longestAudioGapMs = Math.max(counters.longestAudioGapMs, now - lastAudio);
    lastAudio = now;
  }
}

function safely(call) {
  try {
    return call();
  } catch (e) {
    fail(e);
    return null;
  }
}

/**
 * Seal and open of a `size`-byte frame, `count` times, by a member alone
 * in a group of its own (this worker's Member is not touched): the
 * per-frame cost of E2EE in the browser.
 */
function bench(size, count) {
  const solo = new Member('bench', 'bench', '{"aead": "wasm"}');
  solo.signal(JSON.stringify({ type: 'joined', room: 'bench', user: 'bench', members: [{ user: 'bench', e2ee: true }] }));
  const frame = new Uint8Array(size).fill(0x5a);
  let ok = 0;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const opened = solo.open(solo.seal(frame));
    if (opened && opened.length === size) ok += 1;
  }
  const seconds = (performance.now() - start) / 1000;
  const sealStart = performance.now();
  for (let i = 0; i < count; i++) solo.seal(frame);
  const sealSeconds = (performance.now() - sealStart) / 1000;
  solo.free();
  return { size, count, ok, sealAndOpenUs: (seconds * 1e6) / count, sealUs: (sealSeconds * 1e6) / count };
}
