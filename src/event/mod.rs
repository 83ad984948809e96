//! Events: what core code reports while it works, as one typed stream: hosts connecting,
//! planning, converging, failing, and images being pushed. Sent on an mpsc channel; src/output
//! draws them (spinners on a terminal, plain lines otherwise, nothing with -q). No drawing and
//! no printing here.

use crate::registry::push::PushEvent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Step(String),
    Done(String),
    Failed(String),
    /// Something the user must see that does not change the host's state line.
    Note(String),
    /// An image push's progress (the host is the registry's name).
    Push(PushEvent),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub host: String,
    pub kind: EventKind,
}

/// Where push progress goes: a channel of push events (tests), or the one event stream.
pub trait PushSink: Sync {
    fn push_event(&self, e: PushEvent);
}

impl PushSink for std::sync::mpsc::Sender<PushEvent> {
    fn push_event(&self, e: PushEvent) {
        let _ = self.send(e);
    }
}

/// The one stream, with the registry's name as the host.
pub struct ToStream {
    pub host: String,
    pub tx: std::sync::mpsc::Sender<Event>,
}

impl PushSink for ToStream {
    fn push_event(&self, e: PushEvent) {
        let _ = self.tx.send(Event { host: self.host.clone(), kind: EventKind::Push(e) });
    }
}

/// Push progress nobody draws.
pub struct Discard;

impl PushSink for Discard {
    fn push_event(&self, _: PushEvent) {}
}
