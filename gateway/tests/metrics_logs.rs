//! Structured logs (issue 7): a lesson through a whole node, with the JSON
//! log format captured. Every event of a lesson task carries the lesson id
//! in its span, every event of a signaling connection the lesson and the
//! participant; no room token or session cookie appears at any level, and
//! no chat text, concern or incident note at info level or above.
#![allow(clippy::unwrap_used)]

mod web_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaperone_protocol::signal::{ClientMsg, ServerMsg, Target};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use web_support::{Node, Ws, open_ws, recv};

/// Where the subscriber writes: one buffer for the whole test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn send(ws: &mut Ws, m: &ClientMsg) {
    ws.send(Message::text(serde_json::to_string(m).unwrap()))
        .await
        .unwrap();
}

/// Reads until a message matching `f` arrives.
async fn until(ws: &mut Ws, what: &str, f: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
    for _ in 0..50 {
        let m = recv(ws).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        if f(&m) {
            return m;
        }
    }
    panic!("{what}: not received");
}

#[tokio::test]
async fn logs_carry_lesson_and_participant_and_never_tokens_or_chat() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();

    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Node::start(|_| {}).await.unwrap();
        let mut teacher_b = node.browser();
        teacher_b.login_ok("teacher").await.unwrap();
        let lesson = teacher_b.create_lesson("7A").await.unwrap();
        let mut tokens = Vec::new();
        let mut token_for = async |b: &mut web_support::Browser| {
            let t = b.room_token(&lesson).await.unwrap().json()["token"]
                .as_str()
                .unwrap()
                .to_owned();
            tokens.push(t.clone());
            t
        };
        let t = token_for(&mut teacher_b).await;
        let mut teacher = open_ws(&node, &lesson, &t).await.unwrap().unwrap();
        until(&mut teacher, "teacher admitted", |m| {
            matches!(m, ServerMsg::Admitted)
        })
        .await;

        let mut pupil_b = node.browser();
        pupil_b.login_ok("pupil-a").await.unwrap();
        let t = token_for(&mut pupil_b).await;
        let mut pupil = open_ws(&node, &lesson, &t).await.unwrap().unwrap();
        let you = match until(&mut pupil, "welcome", |m| {
            matches!(m, ServerMsg::Welcome { .. })
        })
        .await
        {
            ServerMsg::Welcome { you, .. } => you,
            _ => unreachable!(),
        };
        send(&mut teacher, &ClientMsg::AdmitAll).await;
        until(&mut pupil, "admitted", |m| matches!(m, ServerMsg::Admitted)).await;

        // A token used twice and a forged one are refused (and logged as such).
        let reused = open_ws(&node, &lesson, &tokens[1]).await.unwrap();
        assert!(reused.is_err(), "a room token joins once");
        let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJGT1JHRUQtVE9LRU4ifQ.";
        assert!(open_ws(&node, &lesson, forged).await.unwrap().is_err());

        // Chat, a private message, a concern and an incident, each with words
        // that must stay out of the logs.
        send(
            &mut pupil,
            &ClientMsg::Chat {
                to: None,
                text: "PUBLIC-CHAT-WORDS".into(),
            },
        )
        .await;
        until(&mut teacher, "public chat", |m| {
            matches!(m, ServerMsg::Chat { .. })
        })
        .await;
        send(
            &mut teacher,
            &ClientMsg::Chat {
                to: Some(you),
                text: "PRIVATE-CHAT-WORDS".into(),
            },
        )
        .await;
        until(&mut pupil, "private chat", |m| {
            matches!(m, ServerMsg::Chat { .. })
        })
        .await;
        send(
            &mut pupil,
            &ClientMsg::ReportConcern {
                text: "CONCERN-WORDS".into(),
            },
        )
        .await;
        until(&mut pupil, "concern", |m| {
            matches!(m, ServerMsg::ConcernReceived)
        })
        .await;
        send(
            &mut teacher,
            &ClientMsg::FlagIncident {
                note: "INCIDENT-WORDS".into(),
            },
        )
        .await;
        send(
            &mut teacher,
            &ClientMsg::TurnOff {
                target: Target::One(you),
                source: chaperone_protocol::MediaSource::Microphone,
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(pupil);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let cookies: Vec<String> = [&teacher_b, &pupil_b]
            .iter()
            .flat_map(|b| b.cookies.values().cloned())
            .collect();
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(lines.len() > 20, "{text}");
        for (line, raw) in lines.iter().zip(text.lines()) {
            for secret in tokens
                .iter()
                .chain(&cookies)
                .map(String::as_str)
                .chain([forged, "FORGED-TOKEN"])
            {
                assert!(!raw.contains(secret), "a token or cookie was logged: {raw}");
            }
            let level = line["level"].as_str().unwrap();
            if matches!(level, "INFO" | "WARN" | "ERROR") {
                for words in [
                    "PUBLIC-CHAT-WORDS",
                    "PRIVATE-CHAT-WORDS",
                    "CONCERN-WORDS",
                    "INCIDENT-WORDS",
                ] {
                    assert!(!raw.contains(words), "chat text logged at {level}: {raw}");
                }
            }
        }
        // Spans: the lesson task's events name the lesson; the connection's
        // events name the lesson and the participant.
        let in_span = |name: &str| -> Vec<&serde_json::Value> {
            lines.iter().filter(|l| l["span"]["name"] == name).collect()
        };
        let lesson_events = in_span("lesson");
        assert!(
            !lesson_events.is_empty(),
            "no event in a lesson span:\n{text}"
        );
        assert!(
            lesson_events
                .iter()
                .all(|l| l["span"]["lesson"] == lesson.as_str())
        );
        let signal_events = in_span("signal");
        assert!(
            signal_events
                .iter()
                .any(|l| l["span"]["participant"] == you.to_string().as_str()
                    && l["span"]["lesson"] == lesson.as_str()),
            "no event of the pupil's connection in its span:\n{text}"
        );
        let join_events = in_span("join");
        assert!(
            join_events
                .iter()
                .any(|l| l["fields"]["message"] == "room token refused"),
            "the refused tokens were not logged:\n{text}"
        );
        drop(teacher);
    })
    .await
    .unwrap();
}
