//! The supervised E2EE stage of an edge node.
//!
//! One [`EncryptionStage`] serves the node's room: room events go in
//! ([`EncryptionStage::control`]), the stage's signaling messages come out
//! through the node's signaling client, and frames are sealed on the way
//! out and opened on the way in.
//!
//! When the plugin traps, the frame it trapped on is dropped and the rest
//! of the batch goes to the standby instance; while no instance can serve,
//! frames are dropped. Never bypassed: config validation refuses
//! `fail-open` for E2EE stages, so nothing leaves in the clear. A new
//! instance is primed with the node's seat (`rejoined: false`), from which
//! it resumes the group it kept in the host state store, or rejoins.

use crate::runtime::bindings::{E2eeEvent, E2eeSeat, E2eeStatus, FrameBatch, FrameInfo};
use crate::runtime::{Fault, Instance};
use crate::supervisor::{Stopped, Supervisor};
use std::time::Instant;

/// How long a call may wait for an instance being built.
const BUILD_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Where the stage's signaling messages go (the node's signaling client).
pub type Outbox = Box<dyn FnMut(String) + Send>;

pub struct EncryptionStage {
    stage: Supervisor,
    /// The node's seat, for priming new instances.
    seat: Option<E2eeSeat>,
    outbox: Outbox,
}

/// A frame's header and where its payload starts in the batch.
type Item = (FrameInfo, usize);

impl EncryptionStage {
    pub fn new(stage: Supervisor, outbox: Outbox) -> EncryptionStage {
        EncryptionStage { stage, seat: None, outbox }
    }

    pub fn id(&self) -> &str {
        self.stage.id()
    }

    /// The stage's metrics and state store.
    pub fn shared(&self) -> &std::sync::Arc<crate::runtime::StageShared> {
        self.stage.shared()
    }

    /// Who else is in the room now (for priming new instances).
    pub fn roster(&mut self, others: Vec<String>) {
        if let Some(seat) = &mut self.seat {
            seat.others = others;
        }
    }

    /// Room events in; the stage's answers go to the outbox.
    pub fn control(&mut self, now: Instant, events: Vec<E2eeEvent>) -> Result<(), Stopped> {
        let mut out = Vec::new();
        // A new instance is primed with the seat known before these events
        // (a seat among them reaches it as the event itself, once).
        let result =
            self.run(now, &events, &mut out, |instance, events, out| instance.e2ee_control(events).map(|messages| out.extend(messages)));
        for event in &events {
            if let E2eeEvent::Seated(seat) = event {
                self.seat = Some(E2eeSeat { rejoined: false, ..seat.clone() });
            }
        }
        out.into_iter().for_each(&mut self.outbox);
        result
    }

    /// Seals outbound frames; those that cannot be sealed are dropped.
    pub fn seal(&mut self, now: Instant, batch: &FrameBatch) -> Result<FrameBatch, Stopped> {
        self.frames(now, batch, false)
    }

    /// Opens inbound frames; those that do not open are dropped.
    pub fn open(&mut self, now: Instant, batch: &FrameBatch) -> Result<FrameBatch, Stopped> {
        self.frames(now, batch, true)
    }

    fn frames(&mut self, now: Instant, batch: &FrameBatch, open: bool) -> Result<FrameBatch, Stopped> {
        let mut offset = 0;
        let items: Vec<Item> = batch
            .frames
            .iter()
            .map(|f| {
                let at = offset;
                offset += f.size as usize;
                (*f, at)
            })
            .collect();
        if offset != batch.payloads.len() {
            tracing::error!(stage = self.id(), "a frame batch whose sizes do not add up; dropped");
            return Ok(FrameBatch { frames: Vec::new(), payloads: Vec::new() });
        }
        let mut out = FrameBatch { frames: Vec::new(), payloads: Vec::new() };
        // A frame the stage trapped on, or any frame while it is down, is
        // dropped (`run` gives it no stand-in), never passed on as it came.
        self.run(now, &items, &mut out, |instance, items, out| {
            let (first, last) = match (items.first(), items.last()) {
                (Some(first), Some(last)) => (first.1, last.1 + last.0.size as usize),
                _ => return Ok(()),
            };
            // The whole batch (no fault split it) goes as it is, uncopied.
            let part;
            let input = if items.len() == batch.frames.len() {
                batch
            } else {
                part = FrameBatch { frames: items.iter().map(|(f, _)| *f).collect(), payloads: batch.payloads[first..last].to_vec() };
                &part
            };
            let done = if open { instance.open(input)? } else { instance.seal(input)? };
            if out.frames.is_empty() {
                *out = done;
            } else {
                out.frames.extend(done.frames);
                out.payloads.extend(done.payloads);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// What the stage reports about its group (`None` while it is down).
    pub fn status(&mut self, now: Instant) -> Option<E2eeStatus> {
        let mut status = None;
        let _ = self.run(now, &[()], &mut status, |instance, _, out| instance.e2ee_status().map(|s| *out = Some(s)));
        status
    }

    /// Runs `call` on the serving instance, priming a new one with the seat
    /// first; items a fault or an outage takes are dropped.
    fn run<I: Clone, O>(
        &mut self,
        now: Instant,
        items: &[I],
        out: &mut O,
        call: impl FnMut(&mut Instance, &[I], &mut O) -> Result<(), Fault>,
    ) -> Result<(), Stopped> {
        let mut primed = Vec::new();
        let seat = self.seat.clone();
        // A stage without an instance may wait this long for one being
        // built (on its builder thread) before frames are dropped.
        self.stage.wait_for_builds_until(Some(Instant::now() + BUILD_WAIT));
        let result = self.stage.run(now, items, out, |instance| prime(instance, seat.as_ref(), &mut primed), call, |_, _, _| {});
        primed.into_iter().for_each(&mut self.outbox);
        result
    }

    /// Idle-time work: starting standby instances.
    pub fn maintain(&mut self, now: Instant) {
        self.stage.maintain(now);
    }
}

/// Tells a new instance where the node sits, so it resumes (or rejoins).
fn prime(instance: &mut Instance, seat: Option<&E2eeSeat>, out: &mut Vec<String>) -> Result<(), Fault> {
    if let Some(seat) = seat {
        out.extend(instance.e2ee_control(&[E2eeEvent::Seated(seat.clone())])?);
    }
    Ok(())
}
