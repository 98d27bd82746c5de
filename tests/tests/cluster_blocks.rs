//! A block published on one gateway node reaches a pupil connected to a
//! lesson on another node within a second, through a real Redis.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chaperone_gateway::room::{self, Outbound, RoomDeps, Rooms};
use chaperone_gateway::store::{
    Block, RedisStore, RedisStoreConfig, StateStore, StoreEvent, UnixMillis,
};
use chaperone_lesson::{Account, JoinRequest, LessonConfig, LessonSetup};
use chaperone_protocol::signal::Farewell;
use chaperone_protocol::{LessonId, UserRef};
use chaperone_testkit::redis::RedisServer;
use tokio::sync::mpsc;

fn node(redis: &RedisServer) -> RedisStore {
    let mut config = RedisStoreConfig::new(redis.url());
    config.prefix = "cluster-blocks".into();
    RedisStore::open(config).unwrap()
}

fn user(sub: &str) -> UserRef {
    UserRef::new("https://idp.test", sub).unwrap()
}

#[tokio::test]
async fn a_block_on_one_node_cuts_off_a_pupil_on_another_within_a_second() {
    let redis = RedisServer::start().unwrap();
    let node_a = node(&redis);
    let node_b = node(&redis);
    assert!(node_a.wait_subscribed(Duration::from_secs(5)).await);
    assert!(node_b.wait_subscribed(Duration::from_secs(5)).await);

    // Node B runs the lesson; the pupil is admitted there.
    let lesson_id = LessonId::from_bytes([4; 16]);
    let setup = LessonSetup {
        id: lesson_id,
        class: "7B".into(),
        teachers: vec![user("teacher")],
        assistants: vec![],
        extra_pupils: vec![],
    };
    let (records, _records_rx) = mpsc::channel(10_000);
    let rooms = Rooms::new(RoomDeps {
        records,
        media: None,
        persist: None,
    });
    let room = rooms.open(setup, LessonConfig::default());
    tokio::spawn(room::relay_cluster_events(node_b.clone(), rooms.clone()));

    room.recorder(true).await;
    let (t_tx, _t_rx) = mpsc::channel(256);
    let teacher = room
        .join(
            JoinRequest {
                user: user("teacher"),
                name: "T".into(),
                account: Account {
                    staff: true,
                    ..Account::default()
                },
            },
            t_tx,
        )
        .await
        .unwrap();
    let (p_tx, mut p_rx) = mpsc::channel(256);
    let pupil = JoinRequest {
        user: user("pupil"),
        name: "P".into(),
        account: Account {
            pupil_classes: vec!["7B".into()],
            ..Account::default()
        },
    };
    room.join(pupil.clone(), p_tx).await.unwrap();
    room.message(teacher, chaperone_protocol::signal::ClientMsg::AdmitAll)
        .await;

    // The DSL blocks the pupil on node A.
    node_a
        .block(
            &user("pupil"),
            Block {
                reason: "safeguarding".into(),
                by: user("dsl"),
                at: UnixMillis(0),
            },
        )
        .await
        .unwrap();
    node_a
        .publish(StoreEvent::Blocked {
            user: user("pupil"),
        })
        .await
        .unwrap();

    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(event) = p_rx.recv().await {
            if event == Outbound::Close(Farewell::Blocked) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "the pupil's connection on node B closed within a second"
    );

    // And they cannot come back in on that node.
    let again = room.join(pupil, mpsc::channel(8).0).await;
    assert_eq!(again, Err(chaperone_protocol::signal::ErrorCode::Blocked));
}
