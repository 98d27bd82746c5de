//! The class the failover tests arrange before a node goes (a teacher,
//! pupils in every state, an observer, the teacher's controls), what must
//! hold of it after, and reading the lesson's snapshot and recording gaps.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chaperone_loadtest::gateway::Session;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg, Target};
use chaperone_protocol::{LessonId, ParticipantId, Permission};

use super::{Client, Cluster, Seen, rejoin, welcome};

pub const STEP: Duration = Duration::from_secs(10);

pub fn unix_now() -> u64 {
    std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .as_secs()
}

pub fn admitted(s: &Seen) -> Option<()> {
    matches!(s, Seen::Msg(ServerMsg::Admitted)).then_some(())
}

pub fn waiting(s: &Seen) -> Option<()> {
    matches!(s, Seen::Msg(ServerMsg::Waiting { .. })).then_some(())
}

pub fn status(s: &Seen) -> Option<chaperone_protocol::signal::LessonStatus> {
    match s {
        Seen::Msg(ServerMsg::Status(st)) => Some(st.clone()),
        _ => None,
    }
}

pub fn mic(s: &Seen) -> Option<bool> {
    match s {
        Seen::Msg(ServerMsg::You { permissions, .. }) => Some(permissions.microphone),
        _ => None,
    }
}

pub fn closed(s: &Seen) -> Option<Option<u16>> {
    match s {
        Seen::Closed(code) => Some(*code),
        _ => None,
    }
}

pub fn error(s: &Seen) -> Option<ErrorCode> {
    match s {
        Seen::Msg(ServerMsg::Error { code, .. }) => Some(*code),
        _ => None,
    }
}

/// The lesson's pupils as the test arranges them before the failure.
pub struct Class {
    pub lesson: LessonId,
    pub teacher: Client,
    pub teacher_claims: chaperone_tokens::RoomClaims,
    /// Admitted, microphone revoked.
    pub muted: Client,
    /// Admitted, every default permission.
    pub free: Client,
    /// Removed by the teacher.
    pub removed_pid: ParticipantId,
    /// In the waiting room, never admitted (pupil 4).
    pub waiting: Client,
    /// The safeguarding lead, observing.
    pub observer: Client,
}

/// Pupil `n` of 7A joins through node `node` and is welcomed: its id.
pub async fn join_pupil(
    cluster: &Cluster,
    name: &str,
    node: usize,
    lesson: LessonId,
    n: usize,
) -> (Client, ParticipantId) {
    let mut c = Client::connect(
        name,
        &cluster.url(node),
        &cluster.public,
        lesson,
        &cluster.pupil(lesson, n),
    )
    .await
    .unwrap();
    let id = c.wait_for(STEP, welcome).await.unwrap();
    (c, id)
}

/// The class's two admitted pupils rejoin through `doors`, as their pages
/// do: the muted one (pupil 1), then the free one (pupil 2).
pub async fn rejoin_pupils(
    cluster: &Cluster,
    doors: &[String],
    lesson: LessonId,
    within: Duration,
) -> (Client, Client) {
    let mut back = Vec::new();
    for (name, n) in [("muted", 1), ("free", 2)] {
        back.push(
            rejoin(
                name,
                doors,
                &cluster.public,
                lesson,
                || cluster.pupil(lesson, n),
                within,
            )
            .await
            .unwrap(),
        );
    }
    let free = back.pop().unwrap();
    (back.pop().unwrap(), free)
}

/// A lesson whose teacher joins through node 1 and pupils through nodes 2
/// and 0: one pupil's microphone revoked, one removed, chat off, locked.
pub async fn class(cluster: &Cluster) -> Class {
    let public = cluster.public.clone();
    let mut session = Session::login(&public, "teacher").await.unwrap();
    let lesson_id = session.create_lesson("Fractions").await.unwrap();
    let lesson: LessonId = lesson_id.parse().unwrap();
    let token = session.room_token(&lesson_id).await.unwrap();
    let teacher_claims = cluster.issuer.verify_room(unix_now(), &token).unwrap();

    let mut teacher = Client::connect("teacher", &cluster.url(1), &public, lesson, &token)
        .await
        .unwrap();
    teacher.wait_for(STEP, welcome).await.unwrap();
    let (mut muted, muted_pid) = join_pupil(cluster, "muted", 2, lesson, 1).await;
    let (mut free, _) = join_pupil(cluster, "free", 0, lesson, 2).await;
    let (mut removed, removed_pid) = join_pupil(cluster, "removed", 2, lesson, 3).await;
    for c in [&mut muted, &mut free, &mut removed] {
        c.wait_for(STEP, waiting).await.unwrap();
    }
    // Pupils are let in only once the lesson's recording is attached (the
    // recorder may still be fetching the gateways' keys): wait for it, as
    // a teacher waits for the page's "recording" before admitting.
    teacher
        .wait_for(STEP, |s| status(s).filter(|st| st.recording))
        .await
        .unwrap();
    // One lesson: the teacher on node 1 sees the pupils of nodes 0 and 2.
    teacher.send(ClientMsg::AdmitAll);
    for c in [&mut muted, &mut free, &mut removed] {
        c.wait_for(STEP, admitted).await.unwrap();
    }
    teacher.send(ClientMsg::SetPermission {
        target: Target::One(muted_pid),
        permission: Permission::Microphone,
        granted: false,
    });
    muted
        .wait_for(STEP, |s| (mic(s) == Some(false)).then_some(()))
        .await
        .unwrap();
    teacher.send(ClientMsg::Remove {
        participant: removed_pid,
    });
    removed.wait_for(STEP, closed).await.unwrap();
    // Pupil 4 arrives late and waits; the safeguarding lead observes.
    let (mut waiter, _) = join_pupil(cluster, "waiting", 1, lesson, 4).await;
    waiter.wait_for(STEP, waiting).await.unwrap();
    let mut observer = Client::connect(
        "observer",
        &cluster.url(0),
        &public,
        lesson,
        &cluster.observer(lesson),
    )
    .await
    .unwrap();
    observer.wait_for(STEP, welcome).await.unwrap();
    teacher.send(ClientMsg::SetChatPolicy {
        public_chat: false,
        private_chat: false,
    });
    teacher.send(ClientMsg::Lock { locked: true });
    teacher
        .wait_for(STEP, |s| {
            status(s).filter(|st| st.locked && !st.public_chat && !st.private_chat)
        })
        .await
        .unwrap();
    Class {
        lesson,
        teacher,
        teacher_claims,
        muted,
        free,
        removed_pid,
        waiting: waiter,
        observer,
    }
}

/// Everything the teacher set holds on whichever node owns the lesson now.
pub async fn controls_hold(
    cluster: &Cluster,
    lesson: LessonId,
    doors: &[String],
    mut muted: Client,
    mut free: Client,
    teacher: &mut Client,
) {
    let public = cluster.public.clone();
    // Admitted pupils come back without the waiting room, as they were.
    muted.wait_for(STEP, admitted).await.unwrap();
    assert!(
        !muted.wait_for(STEP, mic).await.unwrap(),
        "a revoked microphone came back"
    );
    free.wait_for(STEP, admitted).await.unwrap();
    assert!(free.wait_for(STEP, mic).await.unwrap());
    // Chat off and the lock, as the teacher left them.
    let st = teacher.wait_for(STEP, status).await.unwrap();
    assert!(st.locked && !st.public_chat && !st.private_chat, "{st:?}");
    free.send(ClientMsg::Chat {
        to: None,
        text: "hello".into(),
    });
    assert_eq!(
        free.wait_for(STEP, error).await.unwrap(),
        ErrorCode::PublicChatOff
    );
    // The removed pupil is refused at every door.
    for door in doors {
        let refused = Client::connect(
            "removed again",
            door,
            &public,
            lesson,
            &cluster.pupil(lesson, 3),
        )
        .await
        .err()
        .expect("a removed pupil was let back in");
        assert_eq!(refused.0, 403, "{door}: {refused:?}");
        assert!(refused.1.contains("removed"), "{refused:?}");
    }
    // A pupil who never was in the lesson meets the lock.
    let refused = Client::connect(
        "newcomer",
        &doors[0],
        &public,
        lesson,
        &cluster.pupil(lesson, 9),
    )
    .await
    .err()
    .expect("a new pupil got into a locked lesson");
    assert_eq!(refused.0, 403);
    assert!(refused.1.contains("locked"), "{refused:?}");
}

/// Waits (at most 10 s) until the lesson's snapshot in Redis satisfies `holds`.
pub async fn snapshot_reaches(
    cluster: &Cluster,
    lesson: LessonId,
    holds: impl Fn(&chaperone_lesson::Snapshot) -> bool,
) {
    use chaperone_gateway::store::{RedisStore, RedisStoreConfig, StateStore as _};
    let mut config = RedisStoreConfig::new(cluster.redis.url());
    config.prefix = cluster.prefix().to_owned();
    let store = RedisStore::open(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(v)) = store.load_lesson(lesson).await
            && chaperone_lesson::Snapshot::decode(&v.bytes).is_ok_and(|s| holds(&s))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the lesson's snapshot never reached the state the teacher saw"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The recorded gaps a verify report lists: from, to (unix micros), why.
pub fn gaps(report: &serde_json::Value) -> Vec<(u64, u64, String)> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"] == "recorded_gap")
        .map(|f| {
            (
                f["from"].as_u64().unwrap(),
                f["to"].as_u64().unwrap(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
