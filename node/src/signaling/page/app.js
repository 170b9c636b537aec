// The room page: joins a room over signaling (signaling.js), publishes and
// plays media (media.js), and shows the room (ui.js). This module holds the
// room's state and applies every message from the node to it.
//
// A lost connection (the node drained or restarted, the network dropped,
// the line went silent) is not the end: the page reconnects with
// exponential backoff and jitter (RECONNECT_FIRST_MS doubling to
// RECONNECT_MAX_MS), joins its room again and publishes the same camera
// and microphone, muted as they were. Leaving stops all of that. In a
// cluster the page knows the other nodes (`GET /nodes`): a line that
// failed moves the next attempt on to the next node, unless the node
// asked to be come back to (close code 1012: its room moved).
//
// A room joined with end-to-end encryption (the form's checkbox, or
// `?e2ee=1`) runs every frame through the E2EE worker (e2ee.js): media is
// sent only sealed with the room's MLS group keys, and the page shows the
// group's epoch and safety number for members to compare.
//
// `window.medianode` lets tests (and the curious) read that state.

import { Signaling } from './signaling.js';
import { Media } from './media.js';
import { E2ee } from './e2ee.js';
import * as ui from './ui.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/** How long a typing indicator lasts without another `typing`. */
const TYPING_SHOWN_MS = 4000;
/** At most one `typing` sent per this long while the user types. */
const TYPING_EVERY_MS = 2000;
/** The first reconnect waits about this long; each next one twice as long. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 10000;

const state = {
  room: null,
  me: null,
  joined: false,
  members: new Map(), // user -> { muted: Set<'audio'|'video'>, speaking }
  messages: new Map(), // id -> { id, user, text, mine, delivered: Set, read: Set }; the last ui.CHAT_KEPT
  typing: new Map(), // user -> timer
  errors: [], // { code, text }, newest last
  stats: null, // the last Media.sample()
  // 'closed' | 'connecting' | 'joined' | 'reconnecting'
  connection: 'closed',
  reconnects: 0, // rejoins after a lost connection, so far
  attempt: 0, // of the reconnect under way
};
let signaling = null;
let media = null;
let e2ee = null; // the room's encryption, when joined with it
let want = { audio: true, video: true };
let lastTyping = 0;
let unread = []; // ids to mark read once the page is visible
let local = null; // the camera and microphone, kept across reconnects
let retry = null; // the pending reconnect's timer
let muting = { audio: false, video: false }; // what the user muted, kept across reconnects
let nodes = []; // the cluster's signaling URLs, this page's node first (empty: just this one)
let node = 0; // which of them the page uses
const grid = new ui.Grid();
const chat = new ui.Chat();

function send(msg) {
  if (signaling) signaling.send(msg);
}

function member(user) {
  let m = state.members.get(user);
  if (!m) {
    m = { muted: new Set(), speaking: false, e2ee: false };
    state.members.set(user, m);
  }
  return m;
}

function refresh() {
  ui.renderRoster(state.members, state.me, Boolean(e2ee));
  grid.sync(state.members, state.me, media ? media.local : null);
  for (const kind of ['audio', 'video']) {
    const button = $(`mute-${kind}`);
    const muted = media ? media.muted[kind] : false;
    const what = kind === 'audio' ? 'microphone' : 'camera';
    button.disabled = !(state.joined && media && media.has(kind));
    button.setAttribute('aria-pressed', String(muted));
    button.textContent = `${muted ? 'Unmute' : 'Mute'} ${what}`;
  }
  $('chat-text').disabled = $('chat-send').disabled = !state.joined;
  ui.showStatus(state.connection, media ? media.state : 'new');
  ui.renderE2ee(e2ee, state.members);
}

function fail(text, code = 'page') {
  state.errors.push({ code, text });
  ui.showAlert(text);
  ui.log(`error ${code}: ${text}`);
}

function showJoinForm(joining) {
  $('go').disabled = joining;
  $('leave').disabled = !joining;
  $('room-view').hidden = !joining;
}

async function join(room, user, encrypted) {
  ui.showAlert('');
  state.room = room;
  state.me = user;
  state.connection = 'connecting';
  if (encrypted) {
    e2ee = new E2ee(room, user, (text) => signaling && signaling.sendText(text), refresh);
    e2ee.onLog = ui.log;
    e2ee.onHold = (held) => {
      if (media) media.setHeld(held);
      if (held) {
        ui.showAlert(`The encryption worker failed (${e2ee.lastFailure}): nothing is sent until a new one is back in the group.`);
        ui.log(`e2ee worker failed: ${e2ee.lastFailure}; restarting it (${e2ee.restarts})`);
      } else if (e2ee.restarts > 0) {
        ui.showAlert('');
        ui.log(`e2ee worker restarted: back in the group at epoch ${e2ee.epoch}`);
      }
    };
    // Without RTCRtpScriptTransform a new worker cannot take over the
    // connection's streams: rebuild the connection.
    e2ee.onUnrecoverable = (why) => reconnectLater(`the encryption worker failed: ${why}`);
  }
  showJoinForm(true);
  await learnNodes();
  await connect();
}

/** The cluster's nodes, as this page's node sees them now. */
async function learnNodes() {
  try {
    const reply = await fetch('/nodes', { cache: 'no-store' });
    if (reply.ok) nodes = (await reply.json()).nodes || [];
    node = 0;
  } catch {
    // The node that served the page is gone: keep the list we have.
  }
}

/** Opens the signaling connection and asks for the room's seat. */
async function connect() {
  signaling = new Signaling(onMessage, onClosed);
  const url = nodes.length ? nodes[node % nodes.length] : undefined;
  try {
    await signaling.connect(params.get('token'), url);
  } catch (e) {
    if (state.connection === 'reconnecting') return reconnectLater(e.message, true);
    reset();
    return fail(`Cannot reach the node: ${e.message}. Check that it is running and that your link is valid, then join again.`, 'connect');
  }
  send({ type: 'join', room: state.room, user: state.me, e2ee: Boolean(e2ee) });
  refresh();
}

/**
 * The line was lost: tear the room down (not the camera) and come back,
 * to the next node when `moveOn` (the one in use failed).
 */
function reconnectLater(why, moveOn = false) {
  clearTimeout(retry); // one reconnect under way at a time
  if (moveOn) node += 1;
  if (signaling) signaling.close();
  if (media) media.close();
  signaling = media = null;
  state.joined = false;
  state.connection = 'reconnecting';
  state.attempt += 1;
  // Who is in the room is unknown until the node says again.
  for (const user of [...state.members.keys()]) if (user !== state.me) state.members.delete(user);
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** (state.attempt - 1));
  const wait = Math.round(ceiling * (0.5 + Math.random() / 2)); // jitter: clients do not return all at once
  ui.showAlert(`Lost the connection to the node (${why}). Reconnecting in ${(wait / 1000).toFixed(1)} s (attempt ${state.attempt})…`);
  ui.log(`reconnecting in ${wait} ms (attempt ${state.attempt}): ${why}`);
  retry = setTimeout(() => { retry = null; connect(); }, wait);
  refresh();
}

/** Back to the join form; nothing of the room is kept. */
function reset() {
  clearTimeout(retry);
  retry = null;
  if (signaling) signaling.close();
  if (media) media.close();
  if (local) local.getTracks().forEach((t) => t.stop());
  if (e2ee) e2ee.close();
  signaling = media = local = e2ee = null;
  muting = { audio: false, video: false };
  state.joined = false;
  state.connection = 'closed';
  state.attempt = 0;
  state.members.clear();
  state.typing.forEach((timer) => clearTimeout(timer));
  state.typing.clear();
  grid.clear();
  chat.clear();
  showJoinForm(false);
  refresh();
}

function onClosed(event) {
  // Joined or on the way back: keep trying. Refused before ever joining
  // (a bad link): say so and stop.
  // 1012: the node stays, the room moved: come back to it.
  if (state.connection === 'joined' || state.connection === 'reconnecting') reconnectLater(event.reason || `code ${event.code}`, event.code !== 1012);
  else {
    reset();
    fail(`The node closed the connection (${event.reason || event.code}). Join again.`, 'closed');
  }
}

async function onMessage(msg) {
  if (e2ee) e2ee.signal(msg);
  switch (msg.type) {
    case 'joined':
      if (state.connection === 'reconnecting') {
        state.reconnects += 1;
        ui.showAlert('');
        ui.log(`back in ${msg.room} after ${state.attempt} attempt(s)`);
      }
      state.joined = true;
      state.connection = 'joined';
      state.attempt = 0;
      state.members.clear();
      for (const m of msg.members) {
        member(m.user).muted = new Set(m.muted || []);
        member(m.user).e2ee = Boolean(m.e2ee);
      }
      ui.log(`joined ${msg.room} as ${msg.user}`);
      await startMedia();
      break;
    case 'presence':
      if (msg.state === 'joined') member(msg.user).e2ee = Boolean(msg.e2ee);
      else {
        state.members.delete(msg.user);
        stopTyping(msg.user);
      }
      ui.log(`${msg.user} ${msg.state}`);
      break;
    case 'muted':
    case 'unmuted':
      if (state.members.has(msg.user)) {
        const muted = member(msg.user).muted;
        if (msg.type === 'muted') muted.add(msg.kind);
        else muted.delete(msg.kind);
      }
      break;
    case 'active-speaker':
      state.members.forEach((m, user) => { m.speaking = user === msg.user; });
      break;
    case 'message':
      onChat(msg);
      break;
    case 'ack':
    case 'read': {
      const message = state.messages.get(msg.id);
      if (message && message.mine) {
        message.delivered.add(msg.user); // read implies delivered
        if (msg.type === 'read') message.read.add(msg.user);
        chat.mark(msg.id);
      }
      break;
    }
    case 'typing':
      clearTimeout(state.typing.get(msg.user));
      state.typing.set(msg.user, setTimeout(() => stopTyping(msg.user), TYPING_SHOWN_MS));
      chat.showTyping(state.typing.keys());
      break;
    case 'answer':
    case 'offer':
    case 'candidate':
      if (media) await media.handle(msg);
      break;
    case 'error':
      // Back too soon: the old seat is not freed yet. Try again later.
      if (msg.ref === 'join' && msg.code === 'user-taken' && state.connection === 'reconnecting') {
        reconnectLater('the old seat is not freed yet');
        break;
      }
      fail(ui.describe(msg, { room: state.room, user: state.me }), msg.code);
      if (msg.ref === 'join') reset(); // refused: back to the form, error shown
      break;
    default:
      ui.log(JSON.stringify(msg));
  }
  refresh();
}

function stopTyping(user) {
  clearTimeout(state.typing.get(user));
  state.typing.delete(user);
  chat.showTyping(state.typing.keys());
}

function onChat(msg) {
  stopTyping(msg.user);
  const message = { id: msg.id, user: msg.user, text: msg.text, mine: false };
  state.messages.set(msg.id, message);
  state.messages.delete(chat.add(message));
  send({ type: 'ack', id: msg.id });
  unread.push(msg.id);
  if (unread.length > ui.CHAT_KEPT) unread.shift(); // a hidden page reads at most what it keeps
  markRead();
}

/** Sends `read` for what is on screen (a hidden tab has read nothing). */
function markRead() {
  if (document.visibilityState !== 'visible') return;
  for (const id of unread.splice(0)) send({ type: 'read', id });
}

function onRemoteTrack(user, track) {
  grid.addTrack(user, track);
  refresh();
}

async function startMedia() {
  if (!local && (want.audio || want.video)) {
    try {
      // HD where the camera has it: simulcast sends its full, half and quarter size.
      const video = want.video ? { width: { ideal: 1280 }, height: { ideal: 720 } } : false;
      local = await navigator.mediaDevices.getUserMedia({ audio: want.audio, video });
    } catch (e) {
      // No camera or microphone (or no permission): take part without them.
      fail(`Cannot use your camera or microphone (${e.name}): you can still see and hear the others. Check the browser's permissions and join again to send.`, 'devices');
    }
  }
  // After a reconnect: the same tracks, muted as they were (and the room told).
  media = new Media(send, onRemoteTrack, refresh, e2ee);
  await media.start(local, muting);
  if ($('quality').value !== 'auto') send({ type: 'quality', video: $('quality').value });
  for (const kind of ['audio', 'video']) {
    if (muting[kind]) {
      send({ type: 'mute', kind });
      member(state.me).muted.add(kind);
    }
  }
  await fillDevices();
}

async function fillDevices() {
  if (!media) return;
  const devices = await media.devices();
  ui.fillDevices($('audio-device'), devices.audio);
  ui.fillDevices($('video-device'), devices.video);
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `m-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  want = { audio: $('want-audio').checked, video: $('want-video').checked };
  join($('room').value.trim(), $('user').value.trim(), $('want-e2ee').checked);
});

$('leave').addEventListener('click', () => {
  send({ type: 'leave' });
  reset();
});

$('chat').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-text').value.trim();
  if (!text) return;
  const message = { id: randomId(), user: state.me, text, mine: true, delivered: new Set(), read: new Set() };
  state.messages.set(message.id, message);
  send({ type: 'message', id: message.id, text });
  state.messages.delete(chat.add(message));
  $('chat-text').value = '';
  lastTyping = 0;
});

$('chat-text').addEventListener('input', () => {
  const now = Date.now();
  if ($('chat-text').value && now - lastTyping > TYPING_EVERY_MS) {
    lastTyping = now;
    send({ type: 'typing' });
  }
});

for (const kind of ['audio', 'video']) {
  $(`mute-${kind}`).addEventListener('click', async () => {
    if (!media) return;
    const muted = !media.muted[kind];
    muting[kind] = muted;
    await media.setMuted(kind, muted);
    send({ type: muted ? 'mute' : 'unmute', kind });
    if (muted) member(state.me).muted.add(kind);
    else member(state.me).muted.delete(kind);
    refresh();
  });
  $(`${kind}-device`).addEventListener('change', async (e) => {
    try {
      await media.useDevice(kind, e.target.value);
    } catch (err) {
      fail(`Cannot switch to that device (${err.name}). It may be in use by another program.`, 'devices');
      await fillDevices();
    }
  });
}

// The quality of the videos this page receives (the node picks a layer).
$('quality').addEventListener('change', (e) => {
  if (media) send({ type: 'quality', video: e.target.value });
});

navigator.mediaDevices?.addEventListener('devicechange', fillDevices);
document.addEventListener('visibilitychange', markRead);

setInterval(async () => {
  if (media) {
    state.stats = await media.sample();
    ui.renderStats(state.stats);
  }
  refresh();
}, 1000);

window.medianode = {
  state,
  get media() { return media; },
  get e2ee() { return e2ee; },
  inbound: () => (media ? media.inbound() : { audio: 0, video: 0 }),
  videoIn: () => (media ? media.videoIn() : []),
  /** The signaling URL in use (a cluster's node), or this page's node. */
  get node() { return nodes.length ? nodes[node % nodes.length] : `ws://${location.host}/ws`; },
};

$('user').value = params.get('user') || `guest-${Math.floor(Math.random() * 1000)}`;
if (params.get('room')) $('room').value = params.get('room');
if (params.get('e2ee')) $('want-e2ee').checked = true;
if (params.get('quality')) $('quality').value = params.get('quality');
if (params.get('camera') === '0') $('want-video').checked = false;
if (params.get('microphone') === '0') $('want-audio').checked = false;
refresh();
if (params.get('autojoin')) $('join').requestSubmit();
