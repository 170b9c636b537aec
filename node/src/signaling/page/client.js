// The medianode web client: joins a room over the signaling WebSocket,
// publishes camera and microphone over one RTCPeerConnection to the node's
// SFU, and plays every other member's tracks. The node answers the first
// offer, then sends its own offers whenever it adds or removes tracks
// (someone published or left); an ICE restart arrives the same way.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const client = { ws: null, pc: null, joined: false, early: [] };
window.medianode = client; // for tests: state and getStats() from outside

function log(text) {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}\n`;
  $('log').textContent = (line + $('log').textContent).slice(0, 8000);
}

function showState() {
  const ws = client.ws ? ['connecting', 'open', 'closing', 'closed'][client.ws.readyState] : 'closed';
  const media = client.pc ? client.pc.connectionState : 'new';
  $('state').textContent = `signaling: ${ws} · media: ${media}`;
}

function send(message) {
  if (client.ws && client.ws.readyState === WebSocket.OPEN) client.ws.send(JSON.stringify(message));
}

async function join(room, user, wantVideo, wantAudio) {
  const token = params.get('token');
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  const ws = new WebSocket(url);
  client.ws = ws;
  ws.onopen = () => { showState(); send({ type: 'join', room, user }); };
  ws.onclose = (e) => { log(`signaling closed: ${e.reason || e.code}`); showState(); };
  // One message at a time, in order: a candidate must not overtake the
  // description it belongs to.
  let queue = Promise.resolve();
  ws.onmessage = (e) => {
    queue = queue.then(() => onMessage(JSON.parse(e.data), wantVideo, wantAudio)).catch((err) => log(`error: ${err}`));
  };
}

async function onMessage(msg, wantVideo, wantAudio) {
  switch (msg.type) {
    case 'joined':
      client.joined = true;
      showMembers(msg.members.map((m) => m.user));
      await startMedia(wantVideo, wantAudio);
      break;
    case 'presence':
      log(`${msg.user} ${msg.state}`);
      break;
    case 'answer':
      await client.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      await addEarlyCandidates();
      break;
    case 'offer':
      await client.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await addEarlyCandidates();
      await client.pc.setLocalDescription(await client.pc.createAnswer());
      send({ type: 'answer', sdp: client.pc.localDescription.sdp });
      break;
    case 'candidate':
      // A candidate can only be added once there is a remote description.
      if (!msg.candidate) break;
      if (client.pc && client.pc.remoteDescription) await client.pc.addIceCandidate(msg.candidate);
      else client.early.push(msg.candidate);
      break;
    case 'active-speaker':
      document.querySelectorAll('video').forEach((v) => v.classList.toggle('speaking', v.dataset.user === msg.user));
      break;
    case 'media-state':
      log(`node sees media ${msg.state}`);
      break;
    case 'error':
      log(`error ${msg.code}: ${msg.message}`);
      break;
    default:
      log(JSON.stringify(msg));
  }
  showState();
}

async function addEarlyCandidates() {
  const early = client.early.splice(0);
  for (const candidate of early) await client.pc.addIceCandidate(candidate);
}

function showMembers(users) {
  $('members').textContent = `in the room: ${users.join(', ')}`;
}

async function startMedia(wantVideo, wantAudio) {
  const pc = new RTCPeerConnection();
  client.pc = pc;
  pc.onconnectionstatechange = showState;
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', candidate: e.candidate.toJSON() }); };
  pc.ontrack = (e) => addRemote(e.track, e.streams[0]);
  if (wantVideo || wantAudio) {
    const local = await navigator.mediaDevices.getUserMedia({ video: wantVideo, audio: wantAudio });
    local.getTracks().forEach((t) => pc.addTransceiver(t, { direction: 'sendonly', streams: [local] }));
    const me = video('you');
    me.muted = true;
    me.srcObject = local;
  }
  await pc.setLocalDescription(await pc.createOffer());
  send({ type: 'offer', sdp: pc.localDescription.sdp });
}

function video(label) {
  const figure = document.createElement('figure');
  const v = document.createElement('video');
  v.autoplay = true;
  v.playsInline = true;
  v.dataset.user = label;
  const caption = document.createElement('figcaption');
  caption.textContent = label;
  figure.append(v, caption);
  $('videos').append(figure);
  return v;
}

const remotes = new Map(); // stream id -> video element
function addRemote(track, stream) {
  const id = stream ? stream.id : track.id;
  let v = remotes.get(id);
  if (!v) {
    v = video(id.replace(/-(audio|video)$/, ''));
    v.srcObject = new MediaStream();
    remotes.set(id, v);
  }
  v.srcObject.addTrack(track);
  track.onended = () => v.srcObject.removeTrack(track);
}

// Inbound packet counts by kind, as the tests read them.
client.inbound = async function () {
  const counts = { audio: 0, video: 0 };
  if (!client.pc) return counts;
  (await client.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp') counts[s.kind] += s.packetsReceived;
  });
  return counts;
};

$('join').onsubmit = (e) => {
  e.preventDefault();
  $('go').disabled = true;
  $('leave').disabled = false;
  join($('room').value, $('user').value, $('video').checked, $('audio').checked);
};
$('leave').onclick = () => {
  send({ type: 'leave' });
  if (client.pc) client.pc.close();
  if (client.ws) client.ws.close();
  $('videos').textContent = '';
  remotes.clear();
  $('go').disabled = false;
  $('leave').disabled = true;
};
$('user').value = params.get('user') || `guest-${Math.floor(Math.random() * 1000)}`;
if (params.get('room')) $('room').value = params.get('room');
if (params.get('autojoin')) $('join').requestSubmit();
setInterval(showState, 1000);
