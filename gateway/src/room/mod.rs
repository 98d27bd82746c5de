//! The lesson task: the thin async shell around one [`Lesson`], in the style
//! of quinn's `ConnectionDriver`.
//!
//! One tokio task per lesson owns the [`Lesson`] and `select!`s over its
//! inbox ([`RoomHandle`] commands: join, message, leave, recorder, block,
//! server offer, window changed, shutdown), the read of its lesson's close
//! from the store, and `sleep_until` the core's next deadline.
//!
//! The lesson's window: when the task starts, and whenever it is told the
//! window changed (staff extended it: [`WINDOW_CHANGED`] on the store's
//! pub/sub, relayed by [`cluster`]), it reads when the lesson closes from
//! its description and hands the core that moment
//! ([`Lesson::handle_window`]). The core does the rest: it warns staff,
//! and when the time runs out it ends the lesson as a teacher would, so
//! the task stops as for any ended lesson and the feed sends `End`.
//!
//! - [`handle`]: [`RoomHandle`], the cheap handle other tasks talk to a
//!   lesson through;
//! - [`registry`]: [`Rooms`], every lesson task on this node;
//! - [`task`]: the task itself, applying the core's effects;
//! - [`cluster`]: cluster events (blocks, changed windows) carried to the
//!   lessons here;
//! - [`trim`]: a closed lesson's freed memory handed back to the system.
//!
//! After every input the task drains [`Lesson::poll_output`] and applies
//! each effect in order:
//!
//! | effect | goes to |
//! |---|---|
//! | `Send` | that participant's connection channel (bounded; `try_send`) |
//! | `Forward`, `Receive`, `MediaOffer`, `MediaAnswer` | the optional [`MediaHandle`] |
//! | `Record`, `Alert` | the [`RoomRecord`] channel the recorder feed consumes |
//! | `Persist` | the optional [`PersistFn`] |
//! | `Disconnect` | that connection: [`Outbound::Close`] after its `Goodbye` |
//!
//! It must never decide anything (every rule is the core's), never block the
//! lesson on one participant's connection (a connection that cannot keep up
//! is dropped and treated as having left), and never drop a record silently.
//! It reads the clock only through [`crate::clock`].

mod cluster;
mod handle;
mod registry;
mod task;
mod trim;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

#[cfg(doc)]
use chaperone_lesson::Lesson;
use chaperone_lesson::{Record, Snapshot};
use chaperone_protocol::LessonId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{Farewell, ServerMsg};
use tokio::sync::mpsc;

use crate::media::MediaHandle;

pub use cluster::relay_cluster_events;
pub use handle::RoomHandle;
pub use registry::Rooms;
pub use task::spawn;

/// The payload of a [`crate::store::StoreEvent::Lesson`] saying a lesson's
/// window changed (its staff extended it): its owner reads the close again.
pub(crate) const WINDOW_CHANGED: &str = "window_changed";

/// Commands queued to one lesson task before senders wait.
pub const INBOX_CAPACITY: usize = 1024;

/// What the lesson task sends down one participant's connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// A message to write to the socket.
    Msg(ServerMsg),
    /// Close the socket for this reason (the `Goodbye` has already been queued).
    Close(Farewell),
}

/// Something for the recorder feed: every [`Record`] and [`Output::Alert`]
/// of a lesson, stamped with the shell's clock.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomRecord {
    /// The lesson's task started: its recorder feed should connect now, so
    /// that the recording is attached before pupils need admitting.
    Opened {
        /// The lesson.
        lesson: LessonId,
        /// The fencing epoch of this node's lease on the lesson (0 without
        /// a cluster): the feed presents it to the recorder.
        epoch: u64,
    },
    /// An event or a chat message to append to the lesson's recording.
    Record {
        /// The lesson.
        lesson: LessonId,
        /// When the shell applied it.
        at: Instant,
        /// What to record.
        record: Record,
    },
    /// The lesson starts here after its last owner stopped without handing
    /// it over (its lease lapsed): nothing of it was recorded from that
    /// node's last frame the recorder holds until `at`.
    Gap {
        /// The lesson.
        lesson: LessonId,
        /// When it started here.
        at: Instant,
        /// Why, for the archive.
        reason: String,
        /// The fencing epoch of this node's new lease on the lesson.
        epoch: u64,
    },
    /// The lesson's task stopped with the lesson not ended: nobody was
    /// connected for `lesson.idle_close_secs`, or this node let the lesson
    /// go (shut down, drained, or lost its lease): its feed sends everything it holds,
    /// has the recorder write it, and finishes. A later `Opened` starts a
    /// new feed that continues the recording.
    Closed {
        /// The lesson.
        lesson: LessonId,
    },
    /// A concern or incident the safeguarding team must see.
    Alert {
        /// The lesson.
        lesson: LessonId,
        /// When the shell applied it.
        at: Instant,
        /// The concern or incident (also recorded as a [`RoomRecord::Record`]).
        event: LessonEvent,
    },
}

/// Saves a lesson's control state (the store plugs in here). Called on the
/// lesson task, so it must not block: queue the write and return.
pub type PersistFn = Arc<dyn Fn(&Snapshot) + Send + Sync>;

/// What every lesson task is connected to.
#[derive(Clone)]
pub struct RoomDeps {
    /// Where records and alerts go (the recorder feed). If it is full the
    /// lesson waits: nothing recorded is dropped.
    pub records: mpsc::Sender<RoomRecord>,
    /// The media plane, if this node runs one.
    pub media: Option<MediaHandle>,
    /// Where snapshots go, if the lesson is persisted.
    pub persist: Option<PersistFn>,
}

impl fmt::Debug for RoomDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomDeps")
            .field("media", &self.media)
            .field("persist", &self.persist.is_some())
            .finish_non_exhaustive()
    }
}
