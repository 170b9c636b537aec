// What the page shows: the roster, the video grid, chat, the connection
// panel, alerts and the log. Everything a member or the node sends is put
// on the page as text (textContent), never as HTML.

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

export function log(text) {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}\n`;
  $('log').textContent = (line + $('log').textContent).slice(0, 8000);
}

export function showStatus(connection, media) {
  $('status').textContent = `${connection} · media ${media}`;
}

/**
 * The room's encryption, when joined with it: whether media is encrypted,
 * the MLS epoch, the safety number members compare (equal on every page in
 * the same group), and who in the room is not in the group yet.
 */
export function renderE2ee(e2ee, members) {
  const box = $('e2ee-status');
  box.hidden = !e2ee;
  if (!e2ee) return;
  box.dataset.state = e2ee.state;
  if (e2ee.state === 'encrypted') {
    const outside = [...members].filter(([u, m]) => m.e2ee && !e2ee.members.includes(u)).map(([u]) => u);
    const waiting = outside.length ? ` · not in the group yet: ${outside.join(', ')}` : '';
    box.textContent = `end-to-end encrypted · epoch ${e2ee.epoch} · safety number ${e2ee.safetyNumber}${waiting}`;
  } else if (e2ee.state === 'restarting') {
    box.textContent = 'encryption restarting: nothing is sent until it is back';
  } else {
    box.textContent = 'joining the encrypted group: nothing is sent until then';
  }
}

// Errors, in words, with what to do. `ref` is the message that failed.
const ADVICE = {
  'user-taken': (e, ctx) => `The name “${ctx.user}” is already in use in room “${ctx.room}”. Choose another name and join again.`,
  'room-full': (e, ctx) => `Room “${ctx.room}” is full. Try again later, or join another room.`,
  'already-joined': () => 'You are already in a room. Leave it before joining another.',
  'not-joined': () => 'You are not in a room yet. Join one first.',
  'rate-limited': () => 'You are sending too fast; the node dropped a message. Wait a moment and try again.',
  'too-big': () => 'That message is too big for the node. Send something shorter.',
  'bad-message': (e) => `The node refused that: ${e.message}.`,
  'token-scope': () => 'Your access token is not valid for this room or name. Ask for a new link.',
  'busy': () => 'The node is busy and dropped a message. Try again in a moment.',
  'no-media': () => 'This node does not carry audio or video; chat still works.',
  'internal': () => 'The node failed on that message and did not apply it. Try again.',
};

export function describe(error, ctx) {
  const advise = ADVICE[error.code];
  return advise ? advise(error, ctx) : `Error from the node (${error.code}): ${error.message}`;
}

export function showAlert(text) {
  const box = $('alert');
  box.textContent = text;
  box.hidden = !text;
}

/** The roster: one item per member, with mute state and who is speaking. */
export function renderRoster(members, me, encrypted = false) {
  const list = $('participants');
  list.replaceChildren(
    ...[...members].map(([user, m]) => {
      const marks = [];
      if (m.speaking) marks.push('speaking');
      if (m.muted.has('audio')) marks.push('microphone off');
      if (m.muted.has('video')) marks.push('camera off');
      // In an encrypted room, a member without E2EE cannot open our media.
      if (encrypted && !m.e2ee) marks.push('not encrypted: cannot see or hear you');
      const item = el('li', { className: m.speaking ? 'speaking' : '' }, el('span', { className: 'name', textContent: user === me ? `${user} (you)` : user }));
      if (marks.length) item.append(el('span', { className: 'marks', textContent: marks.join(' · ') }));
      item.dataset.user = user;
      return item;
    }),
  );
  $('count').textContent = String(members.size);
}

/**
 * The video grid: one labelled tile per member, in roster order. Tracks
 * are kept by publisher (a track may arrive just before its publisher's
 * `presence`) and shown once the roster has them.
 */
export class Grid {
  constructor() {
    this.tiles = new Map(); // user -> { figure, video, caption }
    this.streams = new Map(); // user -> MediaStream of their tracks
  }

  addTrack(user, track) {
    let stream = this.streams.get(user);
    if (!stream) {
      stream = new MediaStream();
      this.streams.set(user, stream);
    }
    stream.addTrack(track);
    track.addEventListener('ended', () => stream.removeTrack(track));
  }

  /** Makes the tiles match the roster: adds the missing, removes the gone. */
  sync(members, me, local) {
    for (const [user, m] of members) {
      let tile = this.tiles.get(user);
      if (!tile) {
        const video = el('video', { autoplay: true, playsInline: true, muted: user === me });
        const caption = el('figcaption');
        const figure = el('figure', {}, video, caption);
        figure.dataset.user = user;
        tile = { figure, video, caption };
        this.tiles.set(user, tile);
        $('grid').append(figure);
      }
      // One's own tile shows the local preview, muted (no echo).
      const stream = user === me ? local : this.streams.get(user);
      if (stream && tile.video.srcObject !== stream) tile.video.srcObject = stream;
      tile.figure.classList.toggle('speaking', m.speaking);
      tile.figure.classList.toggle('camera-off', m.muted.has('video'));
      const off = [...m.muted].map((k) => (k === 'audio' ? 'microphone off' : 'camera off'));
      tile.caption.textContent = (user === me ? `${user} (you)` : user) + (off.length ? ` — ${off.join(', ')}` : '');
    }
    for (const [user, tile] of this.tiles) {
      if (!members.has(user)) {
        tile.figure.remove();
        this.tiles.delete(user);
        this.streams.delete(user);
      }
    }
  }

  clear() {
    $('grid').replaceChildren();
    this.tiles.clear();
    this.streams.clear();
  }
}

/** The most chat messages a page keeps (the oldest go first). */
export const CHAT_KEPT = 500;

/** Chat: the messages, each with delivered and read marks on one's own. */
export class Chat {
  constructor() {
    this.items = new Map(); // id -> { message, marks, item }, oldest first
  }

  /** Adds a message; returns the id of one dropped to stay within CHAT_KEPT. */
  add(message) {
    const marks = el('span', { className: 'marks' });
    const item = el('li', { className: message.mine ? 'mine' : '' }, el('b', { textContent: message.user }), ' ', el('span', { className: 'text', textContent: message.text }), ' ', marks);
    item.dataset.id = message.id;
    $('messages').append(item);
    $('messages').scrollTop = $('messages').scrollHeight;
    this.items.set(message.id, { message, marks, item });
    if (message.mine) this.mark(message.id);
    if (this.items.size <= CHAT_KEPT) return null;
    const [oldest, entry] = this.items.entries().next().value;
    entry.item.remove();
    this.items.delete(oldest);
    return oldest;
  }

  /** Redraws the marks of one's own message `id`. */
  mark(id) {
    const entry = this.items.get(id);
    if (!entry || !entry.message.mine) return;
    const { delivered, read } = entry.message;
    const parts = [];
    if (read.size) parts.push(`✓✓ read by ${[...read].sort().join(', ')}`);
    const unread = [...delivered].filter((u) => !read.has(u)).sort();
    if (unread.length) parts.push(`✓ delivered to ${unread.join(', ')}`);
    entry.marks.textContent = parts.length ? parts.join(' · ') : 'sent';
    entry.marks.className = `marks ${read.size ? 'read' : delivered.size ? 'delivered' : 'sent'}`;
  }

  showTyping(users) {
    const list = [...users];
    $('typing').textContent =
      list.length === 0 ? '' : list.length === 1 ? `${list[0]} is typing…` : `${list.slice(0, -1).join(', ')} and ${list.at(-1)} are typing…`;
  }

  clear() {
    $('messages').replaceChildren();
    $('typing').textContent = '';
    this.items.clear();
  }
}

function kbps(v) {
  return v >= 1000 ? `${(v / 1000).toFixed(2)} Mbit/s` : `${v.toFixed(0)} kbit/s`;
}

function percent(v) {
  return v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)} %`;
}

/** The connection panel, from one `Media.sample()`. */
export function renderStats(sample) {
  const cell = (id, text) => { $(id).textContent = text; };
  if (!sample) return;
  cell('send-rate', kbps(sample.send.kbps));
  cell('send-loss', percent(sample.send.loss));
  cell('send-codec', sample.send.codecs.join(', ') || '—');
  cell('receive-rate', kbps(sample.receive.kbps));
  cell('receive-loss', percent(sample.receive.loss));
  cell('receive-codec', sample.receive.codecs.join(', ') || '—');
  cell('rtt', sample.rttMs === null ? '—' : `${sample.rttMs.toFixed(1)} ms`);
}

/** Fills a device picker and selects the device in use. */
export function fillDevices(select, devices) {
  select.replaceChildren(...devices.list.map((d) => el('option', { value: d.id, textContent: d.label, selected: d.id === devices.using })));
  select.disabled = devices.list.length === 0 || devices.using === undefined;
}
