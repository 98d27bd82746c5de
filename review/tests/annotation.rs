//! The annotation marks each review scope is served for the replay, over
//! real HTTP: the pupil's copy holds staff marks only (no pupil's mark,
//! label or name anywhere in its marks); a DSL-only range hides every mark
//! for SLT and never serves one drawn inside it; the DSL sees them all;
//! undo and clears hide marks at their times; export bundles carry the
//! mark events.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

mod support;

use chaperone_tokens::ReviewScope;
use reqwest::StatusCode;
use serde_json::{Value, json};
#[allow(unused_imports)]
use support::*;

/// The ops as (t_ms, op, ids) for comparison.
fn summary(marks: &Value) -> Vec<(u64, String, Vec<u64>)> {
    marks
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let ids = match m["op"].as_str().unwrap() {
                "hide" => m["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap())
                    .collect(),
                "laser" => vec![],
                _ => vec![m["id"].as_u64().unwrap()],
            };
            (
                m["t_ms"].as_u64().unwrap(),
                m["op"].as_str().unwrap().to_owned(),
                ids,
            )
        })
        .collect()
}

/// Times are from the recording's first record, 1 ms after the fixture's
/// `T0` (the teacher joins at `T0 + 1 ms`): a mark at 1.5 s is at 1499 ms.
fn op(t: u64, op: &str, ids: &[u64]) -> (u64, String, Vec<u64>) {
    (t, op.to_owned(), ids.to_vec())
}

#[tokio::test]
async fn each_scope_is_served_the_marks_it_may_see_at_their_times() {
    let env = env().await;
    let path = format!("/api/recordings/{}", env.lesson);

    // The pupil's copy: the teacher's marks only, drawn, extended, undone,
    // cleared, and the teacher's laser flash.
    let pupil = env
        .open("pupil-b", "pupil", ReviewScope::PupilCopy, Some(env.lesson))
        .await;
    let (status, detail) = pupil.json(&path).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        summary(&detail["marks"]),
        [
            op(1499, "draw", &[1]),
            op(1699, "draw", &[2]),
            op(1799, "extend", &[2]),
            op(6599, "laser", &[]),
            op(6999, "hide", &[2]),
            op(7999, "hide", &[1]),
        ]
    );
    let served = detail["marks"].to_string();
    for secret in ["PUPILA-MARK", "PUPILB-MARK", "Ali", "Bea"] {
        assert!(
            !served.contains(secret),
            "{secret} in a pupil's copy: {served}"
        );
    }
    assert!(
        detail["marks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("by").is_none_or(|b| b == "Ms Rivera"))
    );
    assert_eq!(detail["marks"][2]["points"], json!([[8000, 5000]]));

    // The DSL sees every mark, with who drew it.
    let dsl = env
        .open("dsl", "dsl", ReviewScope::DslRestricted, Some(env.lesson))
        .await;
    let (_, detail) = dsl.json(&path).await;
    let all = [
        op(1499, "draw", &[1]),
        op(1699, "draw", &[2]),
        op(1799, "extend", &[2]),
        op(2499, "draw", &[3]),
        op(5999, "draw", &[4]),
        op(6499, "laser", &[]),
        op(6599, "laser", &[]),
        op(6999, "hide", &[2]),
        op(7999, "hide", &[1, 3, 4]),
    ];
    assert_eq!(summary(&detail["marks"]), all);
    assert_eq!(detail["marks"][3]["by"], "Ali");
    assert_eq!(detail["marks"][3]["stroke"]["text"], "PUPILA-MARK");

    // A DSL-only range from 2 s to 5 s: SLT sees every mark hidden at its
    // start and back at its end, never the one drawn inside it.
    assert_eq!(
        dsl.post(
            &format!("/api/recordings/{}/restrict", env.lesson),
            json!({"from_ms": 2000, "to_ms": 5000, "reason": "imagery"})
        )
        .await,
        StatusCode::CREATED
    );
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    let (_, detail) = slt.json(&path).await;
    assert_eq!(
        summary(&detail["marks"]),
        [
            op(1499, "draw", &[1]),
            op(1699, "draw", &[2]),
            op(1799, "extend", &[2]),
            op(2000, "hide", &[1, 2]),
            op(5000, "draw", &[1]),
            op(5000, "draw", &[2]),
            op(5999, "draw", &[4]),
            op(6499, "laser", &[]),
            op(6599, "laser", &[]),
            op(6999, "hide", &[2]),
            op(7999, "hide", &[1, 4]),
        ]
    );
    // Mark 2 comes back whole (its extension was before the range).
    assert_eq!(
        detail["marks"][5]["stroke"]["points"],
        json!([[2000, 5000], [5000, 5000], [8000, 5000]])
    );
    assert!(!detail["marks"].to_string().contains("PUPILA-MARK"));
    // The pupil's copy never has anything of the range either.
    let (_, detail) = pupil.json(&path).await;
    assert!(
        summary(&detail["marks"])
            .iter()
            .all(|(t, op, _)| !(2000..5000).contains(t) || op == "hide")
    );
    // The DSL still sees everything.
    let (_, detail) = dsl.json(&path).await;
    assert_eq!(summary(&detail["marks"]), all);
}

/// An export bundle carries the mark events: opened with `age` and the
/// review identity alone, its segments hold every recorded annotation
/// event of the lesson.
#[tokio::test]
async fn an_export_carries_the_marks() {
    use chaperone_protocol::feed::FeedFrame;
    use std::process::Command;
    let env = env().await;
    let dsl = env
        .open("dsl", "dsl", ReviewScope::DslRestricted, Some(env.lesson))
        .await;
    let (s, tar) = dsl
        .get(&format!("/api/recordings/{}/export", env.lesson))
        .await;
    assert_eq!(s, StatusCode::OK);
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("bundle.tar"), &tar).unwrap();
    assert!(
        Command::new("tar")
            .arg("xf")
            .arg("bundle.tar")
            .current_dir(out.path())
            .status()
            .unwrap()
            .success()
    );
    let lesson = env.lesson.to_string();
    let segments = out.path().join(format!(
        "chaperone-export-{lesson}/store/lessons/{lesson}/segments"
    ));
    let mut paths: Vec<_> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut events = Vec::new();
    for path in paths {
        let age = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&env.identity_file)
            .arg(&path)
            .output()
            .unwrap();
        assert!(age.status.success());
        let segment = chaperone_archive::segment::Segment::decode(&age.stdout).unwrap();
        for r in segment.records() {
            if let Ok(FeedFrame::Event {
                at_micros, event, ..
            }) = FeedFrame::parse(&r.frame)
            {
                events.push((at_micros - T0, event));
            }
        }
    }
    let marks: Vec<(u64, LessonEvent)> = events
        .into_iter()
        .filter(|(_, e)| {
            matches!(
                e,
                LessonEvent::Annotated { .. }
                    | LessonEvent::MarkExtended { .. }
                    | LessonEvent::MarkUndone { .. }
                    | LessonEvent::MarksCleared { .. }
            )
        })
        .collect();
    assert_eq!(marks, annotation_events());
}
