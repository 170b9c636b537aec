// Media: one RTCPeerConnection to the node's SFU. The page offers first
// with its own tracks (send-only); the node answers, then sends its own
// offers whenever it adds or removes someone's tracks, or restarts ICE.
//
// Muting replaces the sender's track with none, so nothing at all is sent
// for that kind (a disabled track would still send black frames or
// silence); unmuting puts the track back on the same sender, so no
// renegotiation is needed. Switching devices works the same way.
//
// Video goes out in three simulcast layers (a quarter, half and full
// resolution, lowest first as the node expects); the node sends each viewer
// the one that fits its bandwidth and the quality it picked (`quality`).
//
// In an end-to-end encrypted room every sender's and receiver's encoded
// frames run through the E2EE worker (e2ee.js); while the worker is being
// replaced the senders are held (send nothing), as if muted.

import { scriptTransform } from './e2ee.js';

/** The simulcast layers, lowest first. */
export const LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

export class Media {
  /**
   * @param {(msg: object) => void} send sends a signaling message
   * @param {(user: string, track: MediaStreamTrack) => void} onRemoteTrack someone's track arrived
   * @param {() => void} onStateChange the connection's state changed
   * @param {import('./e2ee.js').E2ee | null} e2ee the room's encryption, if it is encrypted
   */
  constructor(send, onRemoteTrack, onStateChange, e2ee = null) {
    this.send = send;
    this.e2ee = e2ee;
    this.held = Boolean(e2ee && e2ee.state === 'restarting'); // sending nothing while the E2EE worker is replaced
    this.onRemoteTrack = onRemoteTrack;
    this.onStateChange = onStateChange;
    this.pc = null;
    this.local = new MediaStream();
    this.tracks = {}; // kind -> the local track (also while muted)
    this.senders = {}; // kind -> RTCRtpSender
    this.muted = { audio: false, video: false };
    this.early = []; // candidates that came before a remote description
    this.last = null; // the previous stats totals, for rates
  }

  get state() {
    return this.pc ? this.pc.connectionState : 'new';
  }

  /**
   * Offers `local`'s tracks (the camera and microphone, or none) to the
   * node. The stream outlives this connection: after a reconnect the next
   * Media publishes the same tracks, muted as they were.
   */
  async start(local, muted = { audio: false, video: false }) {
    // createEncodedStreams() needs the connection to ask for it up front.
    const pc = new RTCPeerConnection(this.e2ee && !scriptTransform ? { encodedInsertableStreams: true } : {});
    this.pc = pc;
    if (this.e2ee) this.e2ee.useConnection(pc);
    pc.onconnectionstatechange = () => this.onStateChange();
    pc.onicecandidate = (e) => { if (e.candidate) this.send({ type: 'candidate', candidate: e.candidate.toJSON() }); };
    // Each forwarded track's stream id is its publisher's user name.
    pc.ontrack = (e) => {
      if (this.e2ee) this.e2ee.protect(e.receiver, 'receive', e.track.kind);
      this.onRemoteTrack(e.streams[0] ? e.streams[0].id : e.track.id, e.track);
    };
    if (local) {
      this.local = local;
      for (const track of local.getTracks()) {
        this.tracks[track.kind] = track;
        this.muted[track.kind] = Boolean(muted[track.kind]);
        const init = { direction: 'sendonly', streams: [local] };
        if (track.kind === 'video') init.sendEncodings = LAYERS.map((l) => ({ ...l }));
        const { sender } = pc.addTransceiver(track, init);
        if (this.e2ee) this.e2ee.protect(sender, 'send', track.kind);
        if (this.muted[track.kind] || this.held) await sender.replaceTrack(null);
        this.senders[track.kind] = sender;
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    this.send({ type: 'offer', sdp: pc.localDescription.sdp });
  }

  /** A media message from the node: `answer`, `offer` or `candidate`. */
  async handle(msg) {
    const pc = this.pc;
    if (!pc) return;
    if (msg.type === 'answer' || msg.type === 'offer') {
      await pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp });
      for (const candidate of this.early.splice(0)) await pc.addIceCandidate(candidate);
      if (msg.type === 'offer') {
        await pc.setLocalDescription(await pc.createAnswer());
        this.send({ type: 'answer', sdp: pc.localDescription.sdp });
      }
    } else if (msg.type === 'candidate' && msg.candidate) {
      if (pc.remoteDescription) await pc.addIceCandidate(msg.candidate);
      else this.early.push(msg.candidate);
    }
  }

  /** Whether this page sends `kind` ('audio' or 'video') at all. */
  has(kind) {
    return kind in this.senders;
  }

  /** Stops (or resumes) sending `kind`. */
  async setMuted(kind, muted) {
    const track = this.tracks[kind];
    if (!track) return;
    this.muted[kind] = muted;
    track.enabled = !muted; // the local preview goes dark too
    await this.senders[kind].replaceTrack(muted || this.held ? null : track);
  }

  /** Holds every sender (sends nothing) or lets the unmuted ones send again. */
  async setHeld(held) {
    this.held = held;
    for (const kind of Object.keys(this.senders)) {
      await this.senders[kind].replaceTrack(held || this.muted[kind] ? null : this.tracks[kind]);
    }
  }

  /** The cameras and microphones the browser offers, and the ones in use. */
  async devices() {
    const all = await navigator.mediaDevices.enumerateDevices();
    const list = (type) => all.filter((d) => d.kind === type).map((d, i) => ({ id: d.deviceId, label: d.label || `${type} ${i + 1}` }));
    const using = (kind) => (this.tracks[kind] ? this.tracks[kind].getSettings().deviceId : undefined);
    return {
      audio: { list: list('audioinput'), using: using('audio') },
      video: { list: list('videoinput'), using: using('video') },
    };
  }

  /** Switches `kind` to another device without renegotiating. */
  async useDevice(kind, deviceId) {
    const old = this.tracks[kind];
    if (!old || old.getSettings().deviceId === deviceId) return;
    const stream = await navigator.mediaDevices.getUserMedia({ [kind]: { deviceId: { exact: deviceId } } });
    const track = stream.getTracks()[0];
    track.enabled = !this.muted[kind];
    if (!this.muted[kind] && !this.held) await this.senders[kind].replaceTrack(track);
    this.local.removeTrack(old);
    old.stop();
    this.local.addTrack(track);
    this.tracks[kind] = track;
  }

  /**
   * Connection quality since the last call, from getStats(): bitrate in
   * kbit/s and packet loss (0..1) each way, codecs, and round-trip time in
   * milliseconds (media RTT from RTCP where there is one, else ICE's).
   */
  async sample() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    const codecs = new Map();
    report.forEach((s) => { if (s.type === 'codec') codecs.set(s.id, s.mimeType); });
    const now = { at: performance.now(), sent: 0, received: 0, lost: 0, packets: 0 };
    const send = { codecs: new Set(), loss: null };
    const receive = { codecs: new Set() };
    let mediaRtt = null;
    let iceRtt = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        now.sent += s.bytesSent || 0;
        if (codecs.has(s.codecId)) send.codecs.add(codecs.get(s.codecId));
      } else if (s.type === 'inbound-rtp') {
        now.received += s.bytesReceived || 0;
        now.packets += s.packetsReceived || 0;
        now.lost += Math.max(0, s.packetsLost || 0);
        if (codecs.has(s.codecId)) receive.codecs.add(codecs.get(s.codecId));
      } else if (s.type === 'remote-inbound-rtp') {
        // What the node reports about our stream (RTCP receiver reports).
        if (typeof s.fractionLost === 'number') send.loss = Math.max(send.loss || 0, s.fractionLost);
        if (typeof s.roundTripTime === 'number' && s.roundTripTime > 0) mediaRtt = Math.max(mediaRtt || 0, s.roundTripTime);
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        pair = s.selectedCandidatePairId;
      }
    });
    const selected = pair && report.get(pair);
    if (selected && typeof selected.currentRoundTripTime === 'number') iceRtt = selected.currentRoundTripTime;
    const last = this.last;
    this.last = now;
    if (!last) return null; // rates need two samples
    const seconds = Math.max(0.001, (now.at - last.at) / 1000);
    const lost = now.lost - last.lost;
    const arrived = now.packets - last.packets;
    return {
      send: { kbps: ((now.sent - last.sent) * 8) / 1000 / seconds, loss: send.loss, codecs: [...send.codecs] },
      receive: { kbps: ((now.received - last.received) * 8) / 1000 / seconds, loss: lost + arrived > 0 ? lost / (lost + arrived) : 0, codecs: [...receive.codecs] },
      rttMs: mediaRtt !== null ? mediaRtt * 1000 : iceRtt !== null ? iceRtt * 1000 : null,
    };
  }

  /** What this page receives of each video: its resolution and frames (read by the tests). */
  async videoIn() {
    const out = [];
    if (!this.pc) return out;
    (await this.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.push({ width: s.frameWidth || 0, height: s.frameHeight || 0, decoded: s.framesDecoded || 0, keyframes: s.keyFramesDecoded || 0 });
      }
    });
    return out;
  }

  /** Inbound packet counts by kind (read by the tests). */
  async inbound() {
    const counts = { audio: 0, video: 0 };
    if (!this.pc) return counts;
    (await this.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') counts[s.kind] += s.packetsReceived; });
    return counts;
  }

  /** Closes the connection; the camera and microphone stay open. */
  close() {
    if (this.pc) this.pc.close();
    this.pc = null;
  }
}
