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
use chaperone_protocol::LessonId;
use chaperone_protocol::signal::{ClientMsg, ServerMsg};
use cluster_support::class::*;
use cluster_support::{Client, Cluster, Seen, rejoin, welcome};

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
