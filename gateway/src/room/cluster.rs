//! Cluster events from the state store's pub/sub, carried to the lesson
//! tasks on this node: blocks to every lesson, a changed window to its
//! lesson.

use super::Rooms;

/// Carries cluster events from the state store's pub/sub to every lesson on
/// this node, until the store's event stream closes: a block published on
/// any node removes the person from every lesson here.
///
/// A lesson's changed window (its staff extended it) goes to that lesson if
/// it runs here, which reads its close again.
///
/// If this node falls behind and misses events, it re-reads the whole block
/// list and applies it (blocking is idempotent), so a missed message never
/// leaves a blocked person in a lesson, and has every lesson here read its
/// close again, so a missed extension never ends a lesson early.
pub async fn relay_cluster_events<S: crate::store::StateStore>(store: S, rooms: Rooms) {
    use crate::store::StoreEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = store.subscribe();
    loop {
        match events.recv().await {
            Ok(StoreEvent::Blocked { user }) => {
                for room in rooms.all() {
                    room.block(user.clone()).await;
                }
            }
            Ok(StoreEvent::Unblocked { user }) => {
                for room in rooms.all() {
                    room.unblock(user.clone()).await;
                }
            }
            Ok(StoreEvent::Lesson { lesson, payload }) if payload == super::WINDOW_CHANGED => {
                if let Some(room) = rooms.get(lesson) {
                    room.window_changed().await;
                }
            }
            Ok(StoreEvent::SessionsEnded { .. } | StoreEvent::Lesson { .. }) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::error!(missed, "missed cluster events; re-applying the block list");
                for room in rooms.all() {
                    room.window_changed().await;
                }
                match store.list_blocks().await {
                    Ok(blocks) => {
                        for (user, _) in blocks {
                            for room in rooms.all() {
                                room.block(user.clone()).await;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot re-read the block list"),
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
