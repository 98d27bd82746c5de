//! Three gateway nodes, one lesson: joins through any node reach its one
//! owner; killing the owner (`kill -9`) hands the lesson to another node
//! with every control as it was (admitted pupils, a revoked microphone, a
//! removed pupil, a waiting pupil still waiting, the safeguarding lead
//! observing, chat off, the lock); a paused owner is fenced; a forged or
//! replayed relay is refused; a Redis restart moves nothing and a long
//! Redis outage stops lessons until it ends. Real processes: three `gateway --dev`, a
//! private `redis-server`, `recorder serve`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod cluster_support;

use std::time::{Duration, Instant};

use chaperone_loadtest::gateway::Session;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg, Target};
use chaperone_protocol::{LessonId, ParticipantId, Permission};
use cluster_support::{Client, Cluster, Seen, rejoin, welcome};

const STEP: Duration = Duration::from_secs(10);

fn unix_now() -> u64 {
    std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .as_secs()
}

fn admitted(s: &Seen) -> Option<()> {
    matches!(s, Seen::Msg(ServerMsg::Admitted)).then_some(())
}

fn waiting(s: &Seen) -> Option<()> {
    matches!(s, Seen::Msg(ServerMsg::Waiting { .. })).then_some(())
}

fn status(s: &Seen) -> Option<chaperone_protocol::signal::LessonStatus> {
    match s {
        Seen::Msg(ServerMsg::Status(st)) => Some(st.clone()),
        _ => None,
    }
}

fn mic(s: &Seen) -> Option<bool> {
    match s {
        Seen::Msg(ServerMsg::You { permissions, .. }) => Some(permissions.microphone),
        _ => None,
    }
}

fn closed(s: &Seen) -> Option<Option<u16>> {
    match s {
        Seen::Closed(code) => Some(*code),
        _ => None,
    }
}

fn error(s: &Seen) -> Option<ErrorCode> {
    match s {
        Seen::Msg(ServerMsg::Error { code, .. }) => Some(*code),
        _ => None,
    }
}

/// The lesson's pupils as the test arranges them before the failure.
struct Class {
    lesson: LessonId,
    teacher: Client,
    teacher_claims: chaperone_tokens::RoomClaims,
    /// Admitted, microphone revoked.
    muted: Client,
    /// Admitted, every default permission.
    free: Client,
    /// Removed by the teacher.
    removed_pid: ParticipantId,
    /// In the waiting room, never admitted (pupil 4).
    waiting: Client,
    /// The safeguarding lead, observing.
    observer: Client,
}

/// Pupil `n` of 7A joins through node `node` and is welcomed: its id.
async fn join_pupil(
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
async fn rejoin_pupils(
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
async fn class(cluster: &Cluster) -> Class {
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
async fn controls_hold(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lesson_survives_its_owner_being_killed_with_every_control_as_it_was() {
    let mut cluster = Cluster::start(3, "failover").unwrap();
    let public = cluster.public.clone();
    let Class {
        lesson,
        mut teacher,
        teacher_claims,
        muted,
        free,
        removed_pid,
        waiting: mut waiter,
        mut observer,
    } = class(&cluster).await;
    let _ = removed_pid;

    let owner = cluster
        .owner()
        .unwrap_or_else(|| panic!("no node owns the lesson: {:?}", cluster.owned()));
    let doors: Vec<String> = (0..3)
        .filter(|&i| i != owner)
        .map(|i| cluster.url(i))
        .collect();
    // Killed once the teacher's last change is in the snapshot (see the
    // paused test).
    snapshot_reaches(&cluster, lesson, |s| s.locked && !s.public_chat).await;
    let (sum, count) = (
        cluster.metric(owner, "chaperone_cluster_snapshot_lag_seconds_sum"),
        cluster.metric(owner, "chaperone_cluster_snapshot_lag_seconds_count"),
    );
    eprintln!("snapshot lag on the owner: sum {sum:?} s over {count:?} writes");
    assert!(count.unwrap_or(0.0) >= 1.0, "no snapshot lag measured");
    let killed = Instant::now();
    cluster.kill(owner);

    // Every connection ends (those relayed by a surviving door with 1001);
    // the pages rejoin through whichever node answers.
    let (mut muted, mut free) = (muted, free);
    for c in [
        &mut teacher,
        &mut muted,
        &mut free,
        &mut waiter,
        &mut observer,
    ] {
        c.wait_for(STEP, closed).await.unwrap();
    }
    let within = Duration::from_secs(30);
    let mut teacher = rejoin(
        "teacher",
        &doors,
        &public,
        lesson,
        || cluster.like(&teacher_claims),
        within,
    )
    .await
    .unwrap();
    teacher.wait_for(STEP, welcome).await.unwrap();
    let back = killed.elapsed();
    let (muted, free) = rejoin_pupils(&cluster, &doors, lesson, within).await;
    eprintln!("teacher back {back:?} after the kill");
    let new_owner = cluster.owner().expect("nobody took the lesson over");
    assert_ne!(new_owner, owner);
    controls_hold(&cluster, lesson, &doors, muted, free, &mut teacher).await;
    // The waiting pupil is back in the waiting room (the lock does not
    // turn away someone already waiting), and not admitted; the observer
    // is back, observing.
    let mut waiter = rejoin(
        "waiting",
        &doors,
        &public,
        lesson,
        || cluster.pupil(lesson, 4),
        within,
    )
    .await
    .unwrap();
    waiter.wait_for(STEP, waiting).await.unwrap();
    assert!(
        waiter
            .wait_for(Duration::from_secs(1), admitted)
            .await
            .is_err(),
        "a waiting pupil was admitted by the takeover"
    );
    let mut observer = rejoin(
        "observer",
        &doors,
        &public,
        lesson,
        || cluster.observer(lesson),
        within,
    )
    .await
    .unwrap();
    observer.wait_for(STEP, welcome).await.unwrap();
    teacher
        .wait_for(STEP, |s| status(s).filter(|st| st.observer_present))
        .await
        .unwrap();
    assert!(
        cluster
            .metric(new_owner, "chaperone_cluster_lessons_taken_total")
            .unwrap_or(0.0)
            >= 1.0
    );

    // One recording, continued by the new owner: it verifies, and the time
    // the killed node took with it is listed as a gap, bounded by the
    // lease and the rejoin.
    teacher.send(ClientMsg::EndLesson);
    let report = cluster.verify(lesson).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["is_final"], true, "{report:#}");
    let gaps = gaps(&report);
    assert_eq!(gaps.len(), 1, "{report:#}");
    let (from, to, reason) = &gaps[0];
    assert!(
        reason.contains("without handing the lesson over"),
        "{reason}"
    );
    let lost = Duration::from_micros(to - from);
    eprintln!("recording gap after the kill: {lost:?}");
    assert!(
        lost > Duration::ZERO && lost < back + Duration::from_secs(5),
        "gap of {lost:?} with the teacher back after {back:?}"
    );
}

/// Waits (at most 10 s) until the lesson's snapshot in Redis satisfies `holds`.
async fn snapshot_reaches(
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
fn gaps(report: &serde_json::Value) -> Vec<(u64, u64, String)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_is_fenced_and_its_late_writes_refused() {
    let cluster = Cluster::start(3, "paused").unwrap();
    let public = cluster.public.clone();
    let Class {
        lesson,
        mut teacher,
        teacher_claims,
        muted,
        free,
        ..
    } = class(&cluster).await;
    let owner = cluster
        .owner()
        .unwrap_or_else(|| panic!("no node owns the lesson: {:?}", cluster.owned()));
    let doors: Vec<String> = (0..3)
        .filter(|&i| i != owner)
        .map(|i| cluster.url(i))
        .collect();

    // Paused past its lease (4 s) once the teacher's last change is in the
    // lesson's snapshot (the teacher is told first and the write follows:
    // milliseconds, more on a machine whose disk is busy, as Redis syncs
    // every write), then another node takes the lesson when someone joins
    // through it.
    snapshot_reaches(&cluster, lesson, |s| s.locked && !s.public_chat).await;
    cluster.signal(owner, "STOP").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut teacher2 = rejoin(
        "teacher (2nd tab)",
        &doors,
        &public,
        lesson,
        || cluster.like(&teacher_claims),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    teacher2.wait_for(STEP, welcome).await.unwrap();
    let new_owner = (0..3)
        .find(|&i| i != owner && cluster.metric(i, "chaperone_cluster_lessons_owned") == Some(1.0))
        .expect("nobody took the paused node's lesson");

    // Resumed, the old owner finds its lease lost and closes its lesson's
    // connections; the teacher's old tab is told so, and a control it
    // sends in the meantime changes nothing anywhere.
    teacher.send(ClientMsg::Lock { locked: false });
    cluster.signal(owner, "CONT").unwrap();
    let (mut muted, mut free) = (muted, free);
    for c in [&mut teacher, &mut muted, &mut free] {
        c.wait_for(Duration::from_secs(15), closed).await.unwrap();
    }
    assert!(
        cluster
            .metric(owner, "chaperone_cluster_lessons_released_total")
            .unwrap_or(0.0)
            >= 1.0,
        "the resumed node did not let the lesson go"
    );
    assert_eq!(
        cluster.metric(owner, "chaperone_cluster_lessons_owned"),
        Some(0.0)
    );
    let (muted, free) = rejoin_pupils(&cluster, &doors, lesson, Duration::from_secs(20)).await;
    assert_eq!(cluster.owner(), Some(new_owner));
    // The unlock sent to the fenced node never took effect.
    controls_hold(&cluster, lesson, &doors, muted, free, &mut teacher2).await;

    // One recording, final, that verifies, with the pause listed as its one
    // gap: the resumed node's feed, presenting its old lease epoch, was
    // refused by the recorder (it never writes beside the new owner's).
    teacher2.send(ClientMsg::EndLesson);
    let report = cluster.verify(lesson).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["is_final"], true, "{report:#}");
    let gaps = gaps(&report);
    assert_eq!(gaps.len(), 1, "{report:#}");
    assert!(
        gaps[0].2.contains("without handing the lesson over"),
        "{:?}",
        gaps[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_or_replayed_relay_is_refused() {
    let cluster = Cluster::start(2, "forged").unwrap();
    let mut session = Session::login(&cluster.public, "teacher").await.unwrap();
    let lesson_id = session.create_lesson("Relay").await.unwrap();
    let lesson: LessonId = lesson_id.parse().unwrap();
    let relay = |i: usize| {
        format!(
            "{}/internal/relay/{lesson}",
            cluster.url(i).replacen("http", "ws", 1)
        )
    };
    let user = chaperone_protocol::UserRef::new("urn:cluster-test", "intruder").unwrap();
    let account = chaperone_tokens::AccountClaims {
        pupil_classes: vec!["7A".into()],
        ..Default::default()
    };
    let connect = |url: String, bearer: String| async move {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    // Signed by a key that is not the deployment's: refused.
    let stranger = chaperone_tokens::TokenIssuer {
        keys: chaperone_tokens::KeySet::from_seed("cluster-test", [9; 32]).unwrap(),
        ..cluster.issuer.clone()
    };
    let forged = stranger
        .issue_node(
            unix_now(),
            30,
            "f1".into(),
            "node-x",
            lesson,
            user.clone(),
            "X".into(),
            account.clone(),
        )
        .unwrap();
    assert_eq!(connect(relay(0), forged).await, 401);
    // A room token is not a node token.
    assert_eq!(connect(relay(0), cluster.pupil(lesson, 1)).await, 401);
    // A genuine node token works once, on any node, and never again.
    let genuine = cluster
        .issuer
        .issue_node(
            unix_now(),
            30,
            "g1".into(),
            "node-x",
            lesson,
            user,
            "X".into(),
            account,
        )
        .unwrap();
    assert_eq!(connect(relay(0), genuine.clone()).await, 101);
    assert_eq!(connect(relay(0), genuine.clone()).await, 401);
    assert_eq!(connect(relay(1), genuine).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_node_keeps_the_lesson() {
    let mut cluster = Cluster::start(3, "rolling").unwrap();
    let public = cluster.public.clone();
    let Class {
        lesson,
        teacher,
        teacher_claims,
        muted,
        free,
        ..
    } = class(&cluster).await;
    let (mut teacher, mut muted, mut free) = (teacher, muted, free);
    // Each node in turn: SIGTERM (it drains: hands its lessons over and
    // exits cleanly), then it starts again with a new id, as a deploy does.
    for i in 0..3 {
        let owned_here = cluster.metric(i, "chaperone_cluster_lessons_owned") == Some(1.0);
        let drained = Instant::now();
        cluster.signal(i, "TERM").unwrap();
        let status = cluster
            .child(i)
            .unwrap()
            .wait_exit(Duration::from_secs(40))
            .unwrap();
        assert!(status.success(), "node {i} exited with {status}");
        let doors: Vec<String> = (0..3).filter(|&j| j != i).map(|j| cluster.url(j)).collect();
        if owned_here || teacher.latest(closed).is_some() {
            // The pages whose connection went through or to the drained
            // node rejoin elsewhere.
            let mut back = Vec::new();
            for (name, c, token) in [
                ("teacher", &mut teacher, cluster.like(&teacher_claims)),
                ("muted", &mut muted, cluster.pupil(lesson, 1)),
                ("free", &mut free, cluster.pupil(lesson, 2)),
            ] {
                if c.latest(closed).is_some()
                    || c.wait_for(Duration::from_secs(2), closed).await.is_ok()
                {
                    let token = token.clone();
                    let again = rejoin(
                        name,
                        &doors,
                        &public,
                        lesson,
                        || token.clone(),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|r| {
                        panic!("{name} could not rejoin after node {i} drained: {r:?}")
                    });
                    back.push((name, again));
                }
            }
            for (name, again) in back {
                match name {
                    "teacher" => teacher = again,
                    "muted" => muted = again,
                    _ => free = again,
                }
            }
            teacher.wait_for(STEP, welcome).await.unwrap();
            eprintln!(
                "node {i} drained; everyone back {:?} after SIGTERM",
                drained.elapsed()
            );
        }
        cluster.start_node(i).unwrap();
    }
    let doors: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    // Teacher, pupils and every control made it through three hand-overs:
    // seen afresh by new connections (pages reloaded).
    for c in [&teacher, &muted, &free] {
        c.close();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let within = Duration::from_secs(20);
    let mut teacher = rejoin(
        "teacher",
        &doors,
        &public,
        lesson,
        || cluster.like(&teacher_claims),
        within,
    )
    .await
    .unwrap();
    let muted = rejoin(
        "muted",
        &doors[1..],
        &public,
        lesson,
        || cluster.pupil(lesson, 1),
        within,
    )
    .await
    .unwrap();
    let free = rejoin(
        "free",
        &doors[2..],
        &public,
        lesson,
        || cluster.pupil(lesson, 2),
        within,
    )
    .await
    .unwrap();
    controls_hold(&cluster, lesson, &doors, muted, free, &mut teacher).await;

    // Every hand-over waited for the recorder: one recording, no gap.
    teacher.send(ClientMsg::EndLesson);
    let report = cluster.verify(lesson).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["is_final"], true, "{report:#}");
    assert_eq!(gaps(&report), [], "{report:#}");
}

fn roster(s: &Seen) -> Option<Vec<String>> {
    match s {
        Seen::Msg(ServerMsg::Roster { participants }) => {
            Some(participants.iter().map(|p| p.name.clone()).collect())
        }
        _ => None,
    }
}

/// Every node's value of a metric, added up.
fn across(cluster: &Cluster, name: &str) -> f64 {
    (0..cluster.nodes.len())
        .filter_map(|i| cluster.metric(i, name))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_keeps_the_lesson_and_a_long_outage_resumes_it() {
    let mut cluster = Cluster::start(3, "redis").unwrap();
    let public = cluster.public.clone();
    let Class {
        lesson,
        teacher,
        teacher_claims,
        muted,
        free,
        ..
    } = class(&cluster).await;
    let (mut teacher, mut muted, mut free) = (teacher, muted, free);
    let owner = cluster
        .owner()
        .unwrap_or_else(|| panic!("no node owns the lesson: {:?}", cluster.owned()));

    // Redis restarted (kill -9, started again with its append-only file),
    // as quickly as a restart takes: well inside a lease's proof.
    let down = Instant::now();
    cluster.redis.restart().unwrap();
    eprintln!("redis restarted in {:?}", down.elapsed());
    // Two leases later nothing has moved: nobody was disconnected, the same
    // node owns the lesson, nobody took it over.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for c in [&mut teacher, &mut muted, &mut free] {
        assert_eq!(c.latest(closed), None, "{} was disconnected", c.name);
    }
    assert_eq!(cluster.owner(), Some(owner), "{:?}", cluster.owned());
    assert_eq!(
        across(&cluster, "chaperone_cluster_lessons_taken_total"),
        1.0,
        "the lesson was taken more than once"
    );
    // The lesson goes on, and a change after the restart is kept.
    let written = |c: &Cluster| {
        c.metric_where(
            owner,
            "chaperone_cluster_snapshot_writes_total",
            "result=\"ok\"",
        )
        .unwrap_or(0.0)
    };
    let before = written(&cluster);
    let changed = Instant::now();
    teacher.clear();
    teacher.send(ClientMsg::SetChatPolicy {
        public_chat: true,
        private_chat: false,
    });
    teacher
        .wait_for(STEP, |s| status(s).filter(|st| st.public_chat))
        .await
        .unwrap();
    free.send(ClientMsg::Chat {
        to: None,
        text: "still here".into(),
    });
    teacher
        .wait_for(STEP, |s| match s {
            Seen::Msg(ServerMsg::Chat { text, .. }) => (text == "still here").then_some(()),
            _ => None,
        })
        .await
        .unwrap();
    // (A change is kept once its snapshot is written; the teacher is told
    // first, so one made in the instant Redis dies can be lost.)
    while written(&cluster) <= before {
        assert!(changed.elapsed() < STEP, "the change was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("change written within {:?}", changed.elapsed());

    // Redis down past a lease: the owner cannot prove its lease, so it
    // stops the lesson; joins are refused while nothing can be decided.
    let down = Instant::now();
    cluster.redis.stop();
    for c in [&mut teacher, &mut muted, &mut free] {
        c.wait_for(Duration::from_secs(15), closed).await.unwrap();
    }
    for i in 0..3 {
        let refused = Client::connect(
            "during",
            &cluster.url(i),
            &public,
            lesson,
            &cluster.pupil(lesson, 1),
        )
        .await
        .err()
        .expect("a join was let in while Redis was down");
        assert_eq!(refused.0, 503, "node {i}: {refused:?}");
    }
    assert_eq!(across(&cluster, "chaperone_cluster_lessons_owned"), 0.0);
    // Down long enough for the lease to have lapsed in Redis too (a
    // shorter outage lets the same node take its own lease back).
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(down.elapsed())).await;

    // Redis back: the pages' rejoin brings everyone back, to one owner,
    // from the last state written.
    cluster.redis.restart().unwrap();
    let doors: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let within = Duration::from_secs(30);
    let mut teacher = rejoin(
        "teacher",
        &doors,
        &public,
        lesson,
        || cluster.like(&teacher_claims),
        within,
    )
    .await
    .unwrap();
    teacher.wait_for(STEP, welcome).await.unwrap();
    let (mut muted, mut free) = rejoin_pupils(&cluster, &doors, lesson, within).await;
    muted.wait_for(STEP, admitted).await.unwrap();
    assert!(
        !muted.wait_for(STEP, mic).await.unwrap(),
        "a revoked microphone came back"
    );
    free.wait_for(STEP, admitted).await.unwrap();
    let st = teacher.wait_for(STEP, status).await.unwrap();
    assert!(st.locked && st.public_chat && !st.private_chat, "{st:?}");
    assert_eq!(
        across(&cluster, "chaperone_cluster_lessons_owned"),
        1.0,
        "{:?}",
        cluster.owned()
    );
    // Nobody twice: the roster settles at the three people connected.
    teacher
        .wait_for(STEP, |s| roster(s).filter(|r| r.len() == 3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = teacher.latest(roster).unwrap();
    assert_eq!(r.len(), 3, "{r:?}");

    // One recording: it verifies; the quick restart cost nothing, and the
    // time the lesson was stopped by the outage is the one gap listed.
    teacher.send(ClientMsg::EndLesson);
    let report = cluster.verify(lesson).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["is_final"], true, "{report:#}");
    let gaps = gaps(&report);
    assert_eq!(gaps.len(), 1, "{report:#}");
    assert!(
        gaps[0].2.contains("without handing the lesson over"),
        "{report:#}"
    );
}
