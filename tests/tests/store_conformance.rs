//! One conformance suite for both state stores: the in-memory `LocalStore`
//! and `RedisStore` against a private, real `redis-server` started on a free
//! loopback port for each test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_gateway::store::{
    Acquired, Block, Lease, LocalStore, NodeInfo, Previous, RedisStore, RedisStoreConfig,
    SessionRecord, StateStore, StoreError, StoreEvent, UnixMillis, VisitorGrant,
};
use chaperone_protocol::{LessonId, UserRef};
use chaperone_testkit::redis::RedisServer;

fn user(sub: &str) -> UserRef {
    UserRef::new("https://idp.test", sub).unwrap()
}

fn lesson(n: u8) -> LessonId {
    LessonId::from_bytes([n; 16])
}

const T0: UnixMillis = UnixMillis(1_800_000_000_000);

fn at(offset_ms: u64) -> UnixMillis {
    UnixMillis(T0.0 + offset_ms)
}

fn redis_store(server: &RedisServer, prefix: &str) -> RedisStore {
    let mut config = RedisStoreConfig::new(server.url());
    config.prefix = prefix.to_owned();
    config.timeout = Duration::from_millis(500);
    RedisStore::open(config).unwrap()
}

/// Generates a test against each store for every case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::LocalStore::new()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let server = super::RedisServer::start().unwrap();
                    let store = super::redis_store(&server, concat!("t-", stringify!($case)));
                    super::$case(store).await;
                }
            )*
        }
    };
}

conformance!(
    ping_answers,
    lesson_snapshots_compare_and_set,
    lesson_snapshots_refuse_oversized,
    blocks_are_kept_and_lifted,
    visitor_grants_cover_their_window,
    a_grant_moves_once_from_its_invitation_to_a_person,
    sessions_expire_and_end_per_user,
    single_use_claims,
    events_reach_subscribers,
    records_are_kept_per_table,
    temp_values_are_taken_once,
    audit_log_appends_in_order,
    leases_have_one_holder_and_growing_epochs,
    fenced_snapshot_writes_refuse_a_stale_epoch,
    released_and_lapsed_leases,
    nodes_announce_themselves_and_expire,
);

async fn ping_answers<S: StateStore>(store: S) {
    store.ping().await.unwrap();
}

async fn lesson_snapshots_compare_and_set<S: StateStore>(store: S) {
    let id = lesson(1);
    assert_eq!(store.load_lesson(id).await.unwrap(), None);
    // Create-only: expected 0 means "must not exist yet".
    assert_eq!(store.save_lesson(id, 0, b"one".to_vec()).await.unwrap(), 1);
    assert_eq!(
        store.save_lesson(id, 0, b"again".to_vec()).await,
        Err(StoreError::Conflict { current: 1 })
    );
    assert_eq!(store.save_lesson(id, 1, b"two".to_vec()).await.unwrap(), 2);
    // A writer holding a stale version loses, and learns the current one.
    assert_eq!(
        store.save_lesson(id, 1, b"stale".to_vec()).await,
        Err(StoreError::Conflict { current: 2 })
    );
    let v = store.load_lesson(id).await.unwrap().unwrap();
    assert_eq!((v.version, v.bytes.as_slice()), (2, b"two".as_slice()));
    // Binary data survives intact.
    let binary: Vec<u8> = (0..=255u8).collect();
    assert_eq!(store.save_lesson(id, 2, binary.clone()).await.unwrap(), 3);
    assert_eq!(store.load_lesson(id).await.unwrap().unwrap().bytes, binary);
    // Other lessons are independent.
    assert_eq!(store.load_lesson(lesson(2)).await.unwrap(), None);
    store.delete_lesson(id).await.unwrap();
    assert_eq!(store.load_lesson(id).await.unwrap(), None);
    assert_eq!(
        store.save_lesson(id, 0, b"fresh".to_vec()).await.unwrap(),
        1
    );
}

async fn lesson_snapshots_refuse_oversized<S: StateStore>(store: S) {
    let big = vec![0u8; chaperone_gateway::store::MAX_VALUE_BYTES + 1];
    assert!(matches!(
        store.save_lesson(lesson(3), 0, big).await,
        Err(StoreError::TooLarge(_))
    ));
    assert_eq!(store.load_lesson(lesson(3)).await.unwrap(), None);
}

async fn blocks_are_kept_and_lifted<S: StateStore>(store: S) {
    let pupil = user("pupil-1");
    let dsl = user("dsl");
    assert_eq!(store.blocked(&pupil).await.unwrap(), None);
    let block = Block {
        reason: "threatening messages".to_owned(),
        by: dsl.clone(),
        at: T0,
    };
    store.block(&pupil, block.clone()).await.unwrap();
    assert_eq!(store.blocked(&pupil).await.unwrap(), Some(block.clone()));
    assert_eq!(store.blocked(&user("pupil-2")).await.unwrap(), None);
    // A subject that only differs by issuer is another person.
    let other_idp = UserRef::new("https://other.test", "pupil-1").unwrap();
    assert_eq!(store.blocked(&other_idp).await.unwrap(), None);
    assert_eq!(
        store.list_blocks().await.unwrap(),
        vec![(pupil.clone(), block)]
    );
    assert!(store.unblock(&pupil).await.unwrap());
    assert!(!store.unblock(&pupil).await.unwrap());
    assert_eq!(store.blocked(&pupil).await.unwrap(), None);
    assert!(store.list_blocks().await.unwrap().is_empty());
}

async fn visitor_grants_cover_their_window<S: StateStore>(store: S) {
    let inspector = user("inspector");
    let grant = VisitorGrant {
        id: "g1".to_owned(),
        visitor: inspector.clone(),
        lessons: vec![lesson(1)],
        not_before: at(1_000),
        not_after: at(60_000),
        granted_by: user("slt"),
        reason: "inspection".to_owned(),
    };
    store.put_grant(grant.clone()).await.unwrap();
    let grants = store.grants_for(&inspector).await.unwrap();
    assert_eq!(grants, vec![grant.clone()]);
    assert!(!grants[0].covers(lesson(1), at(999)), "before the window");
    assert!(grants[0].covers(lesson(1), at(1_000)));
    assert!(!grants[0].covers(lesson(1), at(60_000)), "end is exclusive");
    assert!(!grants[0].covers(lesson(2), at(2_000)), "another lesson");
    assert!(
        store
            .grants_for(&user("someone-else"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.revoke_grant("g1").await.unwrap());
    assert!(!store.revoke_grant("g1").await.unwrap());
    assert!(store.grants_for(&inspector).await.unwrap().is_empty());
}

async fn a_grant_moves_once_from_its_invitation_to_a_person<S: StateStore>(store: S) {
    let invitation =
        UserRef::new("urn:chaperone:email-invitation", "inspector@example.org").unwrap();
    let grant = VisitorGrant {
        id: "g-mail".to_owned(),
        visitor: invitation.clone(),
        lessons: vec![lesson(1)],
        not_before: at(1_000),
        not_after: at(60_000),
        granted_by: user("slt"),
        reason: "inspection".to_owned(),
    };
    store.put_grant(grant.clone()).await.unwrap();
    let (first, second) = (user("inspector"), user("someone-with-the-same-address"));
    assert!(store.move_grant(&grant, &first).await.unwrap());
    // The second sign-in read the same invitation: it gets nothing.
    assert!(!store.move_grant(&grant, &second).await.unwrap());
    assert!(store.grants_for(&invitation).await.unwrap().is_empty());
    assert!(store.grants_for(&second).await.unwrap().is_empty());
    let moved = store.grants_for(&first).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].visitor, first);
    assert_eq!(moved[0].lessons, grant.lessons);
    // Revoked before anyone signed in: nothing to move.
    let revoked = VisitorGrant {
        id: "g-mail-2".to_owned(),
        ..grant.clone()
    };
    store.put_grant(revoked.clone()).await.unwrap();
    assert!(store.revoke_grant("g-mail-2").await.unwrap());
    assert!(!store.move_grant(&revoked, &first).await.unwrap());
    assert_eq!(store.grants_for(&first).await.unwrap().len(), 1);
    // A moved grant is revoked like any other.
    assert!(store.revoke_grant("g-mail").await.unwrap());
    assert!(store.grants_for(&first).await.unwrap().is_empty());
}

async fn sessions_expire_and_end_per_user<S: StateStore>(store: S) {
    let teacher = user("teacher");
    let pupil = user("pupil");
    let record = |u: &UserRef| SessionRecord {
        user: u.clone(),
        payload: r#"{"roles":["teacher"]}"#.to_owned(),
    };
    store
        .put_session("s-teacher-1", record(&teacher), T0, at(60_000))
        .await
        .unwrap();
    store
        .put_session("s-teacher-2", record(&teacher), T0, at(60_000))
        .await
        .unwrap();
    store
        .put_session("s-pupil", record(&pupil), T0, at(60_000))
        .await
        .unwrap();
    assert_eq!(
        store.get_session("s-teacher-1", at(1)).await.unwrap(),
        Some(record(&teacher))
    );
    assert_eq!(store.get_session("nope", at(1)).await.unwrap(), None);
    assert!(
        store
            .touch_session("s-pupil", at(1), at(120_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .touch_session("nope", at(1), at(120_000))
            .await
            .unwrap()
    );

    // Blocking someone ends every session of theirs, and only theirs.
    assert_eq!(store.delete_sessions_of(&teacher, at(2)).await.unwrap(), 2);
    assert_eq!(store.get_session("s-teacher-1", at(3)).await.unwrap(), None);
    assert_eq!(store.get_session("s-teacher-2", at(3)).await.unwrap(), None);
    assert_eq!(
        store.get_session("s-pupil", at(3)).await.unwrap(),
        Some(record(&pupil))
    );
    assert_eq!(store.delete_sessions_of(&teacher, at(4)).await.unwrap(), 0);

    store.delete_session("s-pupil").await.unwrap();
    assert_eq!(store.get_session("s-pupil", at(5)).await.unwrap(), None);

    // Expiry: the record is gone once its time has passed. Redis expires by
    // TTL in real time, so this session is given a short one (50 ms).
    store
        .put_session("short", record(&pupil), T0, at(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.get_session("short", at(120)).await.unwrap(), None);
}

async fn records_are_kept_per_table<S: StateStore>(store: S) {
    assert_eq!(store.get_record("lessons", "a").await.unwrap(), None);
    assert!(store.list_records("lessons").await.unwrap().is_empty());
    store
        .put_record("lessons", "a", r#"{"n":1}"#.to_owned())
        .await
        .unwrap();
    store
        .put_record("lessons", "b", r#"{"n":2}"#.to_owned())
        .await
        .unwrap();
    store
        .put_record("people", "a", r#"{"p":1}"#.to_owned())
        .await
        .unwrap();
    // Replacing keeps one record per id.
    store
        .put_record("lessons", "a", r#"{"n":3}"#.to_owned())
        .await
        .unwrap();
    assert_eq!(
        store.get_record("lessons", "a").await.unwrap().as_deref(),
        Some(r#"{"n":3}"#)
    );
    let mut all = store.list_records("lessons").await.unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a".to_owned(), r#"{"n":3}"#.to_owned()),
            ("b".to_owned(), r#"{"n":2}"#.to_owned())
        ]
    );
    assert_eq!(store.list_records("people").await.unwrap().len(), 1);
    let big = "x".repeat(chaperone_gateway::store::MAX_VALUE_BYTES + 1);
    assert!(matches!(
        store.put_record("lessons", "big", big).await,
        Err(StoreError::TooLarge(_))
    ));
}

async fn temp_values_are_taken_once<S: StateStore>(store: S) {
    store
        .put_temp("login", "s1", b"pending".to_vec(), T0, at(60_000))
        .await
        .unwrap();
    assert_eq!(
        store.take_temp("login", "other", at(1)).await.unwrap(),
        None
    );
    assert_eq!(store.take_temp("nope", "s1", at(1)).await.unwrap(), None);
    // Sixteen concurrent takers: exactly one gets the value.
    let takers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_temp("login", "s1", at(2)).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in takers {
        if let Some(v) = t.await.unwrap() {
            got.push(v);
        }
    }
    assert_eq!(got, vec![b"pending".to_vec()]);

    // Expired values are gone (Redis by real TTL, hence the short one).
    store
        .put_temp("login", "short", b"x".to_vec(), T0, at(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        store.take_temp("login", "short", at(120)).await.unwrap(),
        None
    );
}

async fn audit_log_appends_in_order<S: StateStore>(store: S) {
    assert!(store.audit_tail(10).await.unwrap().is_empty());
    for n in 0..5 {
        store.append_audit(format!(r#"{{"n":{n}}}"#)).await.unwrap();
    }
    assert_eq!(
        store.audit_tail(2).await.unwrap(),
        vec![r#"{"n":3}"#.to_owned(), r#"{"n":4}"#.to_owned()]
    );
    assert_eq!(store.audit_tail(100).await.unwrap().len(), 5);
    assert!(store.audit_tail(0).await.unwrap().is_empty());
    // Paged by position from the start (issue 17): nothing is out of reach.
    let n = |i: u64| format!(r#"{{"n":{i}}}"#);
    assert_eq!(store.audit_page(1, 2).await.unwrap(), (5, vec![n(1), n(2)]));
    assert_eq!(
        store.audit_page(3, 100).await.unwrap(),
        (5, vec![n(3), n(4)])
    );
    assert_eq!(store.audit_page(5, 10).await.unwrap(), (5, vec![]));
    assert_eq!(store.audit_page(0, 0).await.unwrap(), (5, vec![]));
    assert_eq!(store.audit_page(u64::MAX, 3).await.unwrap(), (5, vec![]));
}

async fn single_use_claims<S: StateStore>(store: S) {
    assert!(
        store
            .claim_once("jti", "token-1", T0, at(300_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_once("jti", "token-1", at(1), at(300_000))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_once("jti", "token-2", at(1), at(300_000))
            .await
            .unwrap()
    );
    // Namespaces are separate.
    assert!(
        store
            .claim_once("other", "token-1", at(1), at(300_000))
            .await
            .unwrap()
    );
}

async fn events_reach_subscribers<S: StateStore>(store: S) {
    let mut rx = store.subscribe();
    let events = vec![
        StoreEvent::Blocked { user: user("p1") },
        StoreEvent::Unblocked { user: user("p1") },
        StoreEvent::SessionsEnded { user: user("p2") },
        StoreEvent::Lesson {
            lesson: lesson(9),
            payload: "{\"hello\":1}".to_owned(),
        },
    ];
    let mut delivered = Vec::new();
    // Pub/sub is fire-and-forget: publish until the listener is subscribed
    // and hears the first one, then the rest in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while delivered.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event delivered within 5 s"
        );
        store.publish(events[0].clone()).await.unwrap();
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            delivered.push(e);
        }
    }
    for e in &events[1..] {
        store.publish(e.clone()).await.unwrap();
    }
    while delivered.len() < events.len() {
        let e = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        // Skip duplicates of the first event left over from the retries.
        if e != events[0] {
            delivered.push(e);
        }
    }
    assert_eq!(delivered, events);
}

// ----------------------------------------------------------------------
// Redis only: two nodes, and an outage.
// ----------------------------------------------------------------------

#[tokio::test]
async fn redis_events_reach_every_node_and_state_is_shared() {
    let server = RedisServer::start().unwrap();
    let node_a = redis_store(&server, "two-nodes");
    let node_b = redis_store(&server, "two-nodes");
    assert!(node_a.wait_subscribed(Duration::from_secs(5)).await);
    assert!(node_b.wait_subscribed(Duration::from_secs(5)).await);
    let mut on_a = node_a.subscribe();
    let mut on_b = node_b.subscribe();

    let pupil = user("pupil");
    node_a
        .block(
            &pupil,
            Block {
                reason: "r".to_owned(),
                by: user("dsl"),
                at: T0,
            },
        )
        .await
        .unwrap();
    node_a
        .publish(StoreEvent::Blocked {
            user: pupil.clone(),
        })
        .await
        .unwrap();
    for rx in [&mut on_a, &mut on_b] {
        let e = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            e,
            StoreEvent::Blocked {
                user: pupil.clone()
            }
        );
    }
    assert!(
        node_b.blocked(&pupil).await.unwrap().is_some(),
        "node B sees node A's block"
    );

    // A lesson snapshot written by one node is read, and contested, by the other.
    node_a
        .save_lesson(lesson(1), 0, b"a".to_vec())
        .await
        .unwrap();
    assert_eq!(
        node_b
            .load_lesson(lesson(1))
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        node_b
            .save_lesson(lesson(1), 1, b"b".to_vec())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        node_a.save_lesson(lesson(1), 1, b"a2".to_vec()).await,
        Err(StoreError::Conflict { current: 2 })
    );

    // Prefixes isolate deployments sharing one Redis.
    let other = redis_store(&server, "another-deployment");
    assert_eq!(other.load_lesson(lesson(1)).await.unwrap(), None);
    assert!(other.blocked(&pupil).await.unwrap().is_none());
}

#[tokio::test]
async fn redis_outage_is_unavailable_then_recovers_without_restart() {
    let mut server = RedisServer::start().unwrap();
    let store = redis_store(&server, "outage");
    assert!(store.wait_subscribed(Duration::from_secs(5)).await);
    store
        .save_lesson(lesson(1), 0, b"before".to_vec())
        .await
        .unwrap();

    server.stop();
    let started = tokio::time::Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.load_lesson(lesson(1)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.claim_once("jti", "x", T0, at(1000)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an outage must not hang callers"
    );

    // Back (empty, as after a crash or a flush): the same handle recovers.
    server.restart().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store
            .save_lesson(lesson(1), 0, b"after".to_vec())
            .await
            .unwrap(),
        1
    );
    // Pub/sub resubscribes by itself.
    assert!(store.wait_subscribed(Duration::from_secs(10)).await);
    let mut rx = store.subscribe();
    let event = StoreEvent::SessionsEnded { user: user("x") };
    store.publish(event.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, event);
}

fn granted(a: Acquired) -> Lease {
    granted_after(a).0
}

/// The lease granted and how the one before it ended.
fn granted_after(a: Acquired) -> (Lease, Previous) {
    match a {
        Acquired::Granted { lease, previous } => (lease, previous),
        Acquired::Held { node, epoch } => panic!("held by {node} at epoch {epoch}"),
    }
}

/// Real time passes too: Redis expires keys by its own clock.
async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn leases_have_one_holder_and_growing_epochs<S: StateStore>(store: S) {
    let id = lesson(20);
    assert_eq!(store.lease_holder(id, at(0)).await.unwrap(), None);
    let (a, previous) = granted_after(
        store
            .acquire_lease(id, "node-a", at(0), at(400))
            .await
            .unwrap(),
    );
    assert_eq!((a.node.as_str(), a.epoch), ("node-a", 1));
    assert_eq!(previous, Previous::None);
    // Another node is told who holds it; the holder itself extends it.
    assert_eq!(
        store
            .acquire_lease(id, "node-b", at(10), at(410))
            .await
            .unwrap(),
        Acquired::Held {
            node: "node-a".into(),
            epoch: 1
        }
    );
    let (again, previous) = granted_after(
        store
            .acquire_lease(id, "node-a", at(10), at(410))
            .await
            .unwrap(),
    );
    assert_eq!(again, a);
    assert_eq!(previous, Previous::Ours);
    assert_eq!(
        store.lease_holder(id, at(20)).await.unwrap(),
        Some(("node-a".into(), 1))
    );
    assert!(store.renew_lease(&a, at(20), at(420)).await.unwrap());
    // A lesson's lease is its own: another lesson is free.
    let other = granted(
        store
            .acquire_lease(lesson(21), "node-b", at(20), at(420))
            .await
            .unwrap(),
    );
    assert_eq!(other.epoch, 1);

    // Node A stops renewing; once the lease lapses node B gets epoch 2 and
    // node A's renewal fails from then on.
    pass(500).await;
    let (b, previous) = granted_after(
        store
            .acquire_lease(id, "node-b", at(500), at(900))
            .await
            .unwrap(),
    );
    assert_eq!((b.node.as_str(), b.epoch), ("node-b", 2));
    // Node A never handed it over: whatever it had not passed on is lost.
    assert_eq!(previous, Previous::Lapsed);
    assert!(!store.renew_lease(&a, at(510), at(910)).await.unwrap());
    assert_eq!(
        store.lease_holder(id, at(510)).await.unwrap(),
        Some(("node-b".into(), 2))
    );
}

async fn fenced_snapshot_writes_refuse_a_stale_epoch<S: StateStore>(store: S) {
    let id = lesson(22);
    let a = granted(
        store
            .acquire_lease(id, "node-a", at(0), at(300))
            .await
            .unwrap(),
    );
    assert_eq!(
        store.save_lesson_fenced(&a, b"one".to_vec()).await.unwrap(),
        1
    );
    assert_eq!(
        store.save_lesson_fenced(&a, b"two".to_vec()).await.unwrap(),
        2
    );
    pass(400).await;
    let b = granted(
        store
            .acquire_lease(id, "node-b", at(400), at(10_000))
            .await
            .unwrap(),
    );
    // Node A wakes up (paused past its lease) and writes: refused.
    assert_eq!(
        store.save_lesson_fenced(&a, b"stale".to_vec()).await,
        Err(StoreError::Fenced { current: 2 })
    );
    let loaded = store.load_lesson(id).await.unwrap().unwrap();
    assert_eq!(loaded.bytes, b"two");
    assert_eq!(
        store
            .save_lesson_fenced(&b, b"three".to_vec())
            .await
            .unwrap(),
        3
    );
    // A lease never granted cannot write either.
    let forged = Lease {
        lesson: lesson(23),
        node: "node-x".into(),
        epoch: 7,
    };
    assert_eq!(
        store.save_lesson_fenced(&forged, b"x".to_vec()).await,
        Err(StoreError::Fenced { current: 0 })
    );
    assert_eq!(store.load_lesson(lesson(23)).await.unwrap(), None);
}

async fn released_and_lapsed_leases<S: StateStore>(store: S) {
    let id = lesson(24);
    let a = granted(
        store
            .acquire_lease(id, "node-a", at(0), at(300))
            .await
            .unwrap(),
    );
    // A lapsed lease nobody took since is restored by a renewal: nobody
    // else held the lesson meanwhile.
    pass(400).await;
    assert_eq!(store.lease_holder(id, at(400)).await.unwrap(), None);
    assert!(store.renew_lease(&a, at(400), at(10_000)).await.unwrap());
    assert_eq!(
        store.lease_holder(id, at(410)).await.unwrap(),
        Some(("node-a".into(), 1))
    );
    // Released (a drain): the next node gets a new epoch at once.
    assert!(store.release_lease(&a).await.unwrap());
    assert!(!store.release_lease(&a).await.unwrap());
    let (b, previous) = granted_after(
        store
            .acquire_lease(id, "node-b", at(420), at(10_000))
            .await
            .unwrap(),
    );
    assert_eq!(b.epoch, 2);
    assert_eq!(previous, Previous::Released);
    // The released holder cannot take it back by renewing.
    assert!(!store.renew_lease(&a, at(430), at(10_000)).await.unwrap());
    assert!(!store.release_lease(&a).await.unwrap());
    assert_eq!(
        store.lease_holder(id, at(440)).await.unwrap(),
        Some(("node-b".into(), 2))
    );
}

async fn nodes_announce_themselves_and_expire<S: StateStore>(store: S) {
    let node = |id: &str, lessons: u32| NodeInfo {
        id: id.into(),
        url: format!("http://127.0.0.1/{id}"),
        lessons,
        draining: false,
    };
    assert_eq!(store.live_nodes(at(0)).await.unwrap(), vec![]);
    store.put_node(node("a", 1), at(0), at(300)).await.unwrap();
    store
        .put_node(node("b", 2), at(0), at(10_000))
        .await
        .unwrap();
    store
        .put_node(node("c", 0), at(0), at(10_000))
        .await
        .unwrap();
    assert_eq!(
        store.live_nodes(at(10)).await.unwrap(),
        vec![node("a", 1), node("b", 2), node("c", 0)]
    );
    // An announcement replaces the last one.
    store
        .put_node(node("b", 5), at(20), at(10_000))
        .await
        .unwrap();
    store.remove_node("c").await.unwrap();
    pass(400).await;
    assert_eq!(store.live_nodes(at(400)).await.unwrap(), vec![node("b", 5)]);
}
