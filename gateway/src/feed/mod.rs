//! The recorder feed: every lesson's records (events, public and private
//! chat) and every media frame the SFU forwarded become feed frames
//! (`protocol::feed`) streamed over one WebSocket per lesson to a recorder
//! (`recorder serve`, or the same service run in-process by `gateway --dev`
//! and single-node deployments).
//!
//! What it must never do: drop a frame, or tell a lesson its recording is
//! attached when it is not. Hence:
//!
//! - every frame stays in the lesson's [`FeedLog`] (memory, then a local
//!   spool file) until the recorder acknowledges it as durable, and is
//!   replayed, in order, after a reconnect, to the same or another recorder;
//! - the recording gate is the acknowledged feed: a lesson is told its
//!   recorder is attached when a recorder has answered its `Hello`, and lost
//!   when the connection drops or acknowledgements stop (the recorder sends
//!   one at least every second), or the spool passes its bound;
//! - a lesson's frames are numbered here from 1 and sent as `base + n`,
//!   where `base` is what the recorder already holds for the lesson when this
//!   node first reaches it (a lesson taken over from another node, or a
//!   gateway restarted mid-lesson, continues the archive's numbering instead
//!   of colliding with it: a first `Hello` says `resume_from: 0`).
//!
//! A lesson's final frame (`End`) follows its `Ended` event after a few
//! seconds (its participants' leaving events come in between); once the
//! recorder acknowledges it the lesson's feed is done.
//!
//! At shutdown ([`FeedStatus::stop`]) what is already queued is routed, then
//! every lesson sends everything it holds followed by a `Flush`, and stops
//! once all of it is acknowledged or after a bounded drain.
//!
//! Layout: `lesson` is one lesson's feed as a state machine without I/O
//! (every rule above lives there, tested in virtual time); `task` is the
//! thin tokio shell that drives it; `dial` opens a connection to a
//! recorder; `hub` routes records and frames to the lessons' tasks;
//! [`log`] is a lesson's unacknowledged frames (memory, then spool);
//! `status` holds the node-wide figures and metrics; `readiness` probes
//! the recorders' `/readyz`; [`embedded`] runs a recorder in-process.

mod dial;
pub(crate) mod embedded;
mod hub;
mod lesson;
pub(crate) mod log;
mod readiness;
mod status;
mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::tokens::TokenIssuer;
use crate::media::RecordedFrame;
use crate::room::{RoomRecord, Rooms};

pub(crate) use readiness::ReadinessProbe;
pub(crate) use status::{FeedMetrics, FeedStatus};

/// Settings of the feed.
#[derive(Clone, Debug)]
pub(crate) struct FeedSettings {
    /// Recorder base URLs (`ws://host:port`); the feed is `<url>/feed`. A
    /// lesson goes to one of them (by its id) and fails over in order.
    pub recorders: Vec<String>,
    /// Bytes of unacknowledged frames one lesson keeps in memory before
    /// spooling the oldest to disk.
    pub buffer_bytes: usize,
    /// Where spool files go.
    pub spool_dir: PathBuf,
    /// Spool bytes per lesson past which its recording counts as lost
    /// (pupils are held; nothing is dropped).
    pub spool_max_bytes: u64,
    /// Silence on a connection (no acknowledgement) after which it is lost.
    pub ack_timeout: Duration,
}

/// Starts the feed on the lessons' `records` and the SFU's `frames`; it
/// tells `rooms` when each lesson's recording is attached or lost.
pub(crate) fn spawn(
    settings: FeedSettings,
    tokens: Arc<TokenIssuer>,
    records: mpsc::Receiver<RoomRecord>,
    frames: mpsc::Receiver<RecordedFrame>,
    rooms: Rooms,
) -> (JoinHandle<()>, FeedStatus) {
    let shared = Arc::new(status::Shared::default());
    let status = FeedStatus(shared.clone());
    let hub = hub::Hub {
        settings: Arc::new(settings),
        tokens,
        rooms,
        shared,
    };
    (tokio::spawn(hub.run(records, frames)), status)
}
