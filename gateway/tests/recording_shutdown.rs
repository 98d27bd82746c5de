//! Nothing recorded is lost at a clean shutdown: what the embedded recorder
//! had not yet sealed (a segment is only sealed every `segment_secs`) is
//! written when the node shuts down, and the archive verifies.
#![allow(clippy::unwrap_used)]

mod web_support;

use std::time::Duration;

use chaperone_protocol::signal::{ClientMsg, ServerMsg};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use web_support::{Node, open_ws, recv};

async fn until(ws: &mut web_support::Ws, f: impl Fn(&ServerMsg) -> bool) {
    loop {
        let m = recv(ws).await.unwrap();
        if f(&m) {
            return;
        }
    }
}

#[tokio::test]
async fn pending_records_are_written_at_shutdown() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // Segments every five minutes: nothing is sealed during the test
        // unless the shutdown writes it.
        let mut node = Node::start(|c| c.recorder.segment_secs = 300)
            .await
            .unwrap();
        let mut teacher = node.browser();
        teacher.login_ok("teacher").await.unwrap();
        let lesson = teacher.create_lesson("7A").await.unwrap();
        let token = teacher.room_token(&lesson).await.unwrap().json()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut t = open_ws(&node, &lesson, &token).await.unwrap().unwrap();
        until(&mut t, |m| matches!(m, ServerMsg::Admitted)).await;
        let chat = serde_json::to_string(&ClientMsg::Chat {
            to: None,
            text: "written before shutdown".into(),
        })
        .unwrap();
        t.send(Message::text(chat)).await.unwrap();
        until(&mut t, |m| matches!(m, ServerMsg::Chat { .. })).await;

        let store = node.recordings.path().join("recordings");
        let segments = store.join(format!("lessons/{lesson}/segments"));
        assert!(
            !segments.exists() || std::fs::read_dir(&segments).unwrap().next().is_none(),
            "nothing sealed yet"
        );
        node.app.shutdown().await;

        let key = chaperone_archive::keys::RecorderPublicKey::parse(
            &std::fs::read_to_string(store.join(format!("lessons/{lesson}/recorder.pub"))).unwrap(),
        );
        let objects = chaperone_archive::writer::local_store(&store).unwrap();
        let lesson_id: chaperone_protocol::LessonId = lesson.parse().unwrap();
        let report =
            chaperone_archive::verify::verify_lesson(objects.as_ref(), &lesson_id, &key.unwrap())
                .await;
        // The lesson did not end, so the last manifest is a checkpoint, not
        // a final one; nothing else is wrong.
        assert!(
            report
                .problems()
                .all(|f| matches!(f, chaperone_archive::verify::Finding::NotFinal { .. })),
            "{report:?}"
        );
        assert!(report.segments_ok >= 1, "{report:?}");
        let identity = node.recordings.path().join("review-identity.txt");
        let mut text = String::new();
        for seg in std::fs::read_dir(&segments).unwrap() {
            let out = std::process::Command::new("age")
                .arg("-d")
                .arg("-i")
                .arg(&identity)
                .arg(seg.unwrap().path())
                .output()
                .unwrap();
            assert!(out.status.success());
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        assert!(text.contains("written before shutdown"));
    })
    .await
    .unwrap();
}
