//! The school's class lists (`lesson.roster_file`) put pupils who have never
//! signed in on the register: absent, beside those who signed in and stayed
//! away; a roster file with a row that cannot be used stops the start with
//! its line number.
#![allow(clippy::unwrap_used)]

mod web_support;

use std::time::Duration;

use chaperone_protocol::signal::ServerMsg;
use web_support::{Node, ended_within, open_ws, recv};

fn roster_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("roster.csv");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_pupil_who_never_signed_in_is_on_the_register_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let file = roster_file(
        &dir,
        "class,subject,name\n7A,pupil-b,Beatrice (MIS)\n7A,pupil-new,\"Zed, new this term\"\n7B,pupil-x,Xan\n",
    );
    let node = Node::start(|c| c.lesson.roster_file = file).await.unwrap();
    let mut teacher = node.browser();
    teacher.login_ok("teacher").await.unwrap();
    // Classes the roster names can be chosen for lessons.
    let classes = teacher.get("/api/classes").await.unwrap().json();
    assert!(classes.to_string().contains("7B"), "{classes}");
    let lesson = teacher.create_lesson("7A").await.unwrap();
    // Bea signed in once (the directory knows her, under the provider's
    // name); Zed never did.
    let mut bea = node.browser();
    bea.login_ok("pupil-b").await.unwrap();
    let token = teacher.room_token(&lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = open_ws(&node, &lesson, &token).await.unwrap().unwrap();
    assert!(matches!(
        recv(&mut ws).await.unwrap(),
        ServerMsg::Welcome { .. }
    ));
    let end = serde_json::to_string(&chaperone_protocol::signal::ClientMsg::EndLesson).unwrap();
    futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(end))
        .await
        .unwrap();
    ended_within(&mut ws, Duration::from_secs(5)).await.unwrap();
    let csv = teacher
        .get(&format!("/api/lessons/{lesson}/register.csv"))
        .await
        .unwrap()
        .body;
    assert!(csv.contains(",Ms Rivera,teacher,yes,attended,"), "{csv}");
    assert!(
        csv.contains(",Bea (7A),pupil,yes,absent,,,,0.0\r\n"),
        "{csv}"
    );
    assert!(!csv.contains("Beatrice"), "one row per pupil: {csv}");
    assert!(
        csv.contains(",\"Zed, new this term\",pupil,yes,absent,,,,0.0\r\n"),
        "{csv}"
    );
    assert!(!csv.contains("Xan"), "another class's pupil: {csv}");
}

#[tokio::test]
async fn a_roster_with_an_unusable_row_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = roster_file(&dir, "class,subject,name\n7A,pupil-b,Bea\n7A,pupil-c\n");
    let err = Node::start(|c| c.lesson.roster_file = file)
        .await
        .err()
        .expect("a gateway started with a broken roster");
    let text = format!("{err:#}");
    assert!(
        text.contains("lesson.roster_file") && text.contains("line 3"),
        "{text}"
    );
    let missing = Node::start(|c| c.lesson.roster_file = "/nonexistent/roster.csv".into())
        .await
        .err()
        .expect("a gateway started without its roster");
    assert!(format!("{missing:#}").contains("/nonexistent/roster.csv"));
}
