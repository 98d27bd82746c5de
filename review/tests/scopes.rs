//! What each review scope is served, over real HTTP: the API responses
//! *and* the bytes of the WebM files (a pupil copy holds no other pupil's
//! track and no private message; a DSL-only range is blanked for SLT),
//! range requests, and the search.
#![allow(clippy::unwrap_used)]
// The process test issues a token for the real clock the binary reads.
#![allow(clippy::disallowed_methods)]

mod support;

#[allow(unused_imports)]
use support::*;

#[tokio::test]
async fn a_pupil_copy_holds_no_other_pupils_track_and_no_private_message() {
    let env = env().await;
    let pupil = env
        .open("pupil-b", "pupil", ReviewScope::PupilCopy, Some(env.lesson))
        .await;
    let (status, detail) = pupil.json(&format!("/api/recordings/{}", env.lesson)).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let files: Vec<&str> = detail["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["p1-av.webm"],
        "only the teacher's camera and microphone"
    );
    let text = detail.to_string();
    assert!(
        !text.contains("SECRET") && !text.contains("CONCERN"),
        "{text}"
    );
    assert!(detail["events"].as_array().unwrap().is_empty());
    assert!(
        detail["chat"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["private"] == false)
    );
    assert_eq!(detail["chat"].as_array().unwrap().len(), 2);
    assert!(
        detail.get("participants").is_none(),
        "no roster in a pupil copy"
    );

    // The served media holds the teacher's frames and nobody else's.
    let (status, webm) = pupil
        .get(&format!("/api/recordings/{}/media/p1-av.webm", env.lesson))
        .await;
    assert_eq!(status, StatusCode::OK);
    let blocks = chaperone_review::webm::blocks(&webm);
    assert!(blocks.len() > 150, "{} blocks", blocks.len());
    assert!(blocks.iter().all(|(_, _, data)| contains(data, "TEACHER-")));
    for other in ["PUPILA", "PUPILB", "SECRET"] {
        assert!(!contains(&webm, other), "{other} in the pupil copy's media");
    }
    // Another pupil's files (and their own) are answered as missing.
    for f in ["p2-av.webm", "p3-av.webm", "p2-screen.webm"] {
        let (s, _) = pupil
            .get(&format!("/api/recordings/{}/media/{f}", env.lesson))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{f}");
    }
    // A lesson the token does not name is not there, and the audit is not for pupils.
    let (s, _) = pupil.get(&format!("/api/recordings/{}", env.other)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = pupil
        .get(&format!("/api/recordings/{}/audit", env.lesson))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = pupil
        .get(&format!("/api/recordings/{}/export", env.lesson))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // SLT gets every track and the private message.
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    let (_, detail) = slt.json(&format!("/api/recordings/{}", env.lesson)).await;
    assert_eq!(detail["files"].as_array().unwrap().len(), 3);
    assert!(detail.to_string().contains("SECRET private question"));
    let (s, a) = slt
        .get(&format!("/api/recordings/{}/media/p2-av.webm", env.lesson))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(contains(&a, "PUPILA-CAM"));

    let audit = env.audit().await;
    assert!(
        audit.iter().any(|e| e["action"] == "refused"
            && e["outcome"] == "not_found"
            && e["role"] == "pupil"
            && e["reason"].as_str().unwrap().contains("p2-av.webm")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "view" && e["role"] == "slt" && e["reason"] == "reason of slt")
    );
}

#[tokio::test]
async fn range_requests_are_served_and_audited_as_seeks() {
    let env = env().await;
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    let path = format!(
        "{}/api/recordings/{}/media/p1-av.webm",
        env.base, env.lesson
    );
    let whole = slt
        .http
        .get(&path)
        .header("cookie", &slt.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let whole = whole.bytes().await.unwrap();
    let r = slt
        .http
        .get(&path)
        .header("cookie", &slt.cookie)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000-1999/{}", whole.len())
    );
    assert_eq!(r.bytes().await.unwrap(), whole[1000..2000]);
    let r = slt
        .http
        .get(&path)
        .header("cookie", &slt.cookie)
        .header("range", format!("bytes={}-", whole.len() + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let audit = env.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "play" && e["file"] == "p1-av.webm")
    );
    assert!(
        audit.iter().any(|e| e["action"] == "seek"
            && e["file"] == "p1-av.webm"
            && e["reason"] == "reason of slt"),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn a_dsl_only_range_is_blanked_for_slt_and_shown_to_the_dsl() {
    let env = env().await;
    let dsl = env
        .open("dsl", "dsl", ReviewScope::DslRestricted, Some(env.lesson))
        .await;
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    // Only the DSL, in its restricted scope, may mark a range.
    assert_eq!(
        slt.post(
            &format!("/api/recordings/{}/restrict", env.lesson),
            json!({"from_ms": 2000, "to_ms": 5000, "reason": "x"})
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let dsl_plain = env
        .open("dsl", "dsl", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    assert_eq!(
        dsl_plain
            .post(
                &format!("/api/recordings/{}/restrict", env.lesson),
                json!({"from_ms": 2000, "to_ms": 5000, "reason": "x"})
            )
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        dsl.post(
            &format!("/api/recordings/{}/restrict", env.lesson),
            json!({"from_ms": 2000, "to_ms": 5000, "reason": " "})
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        dsl.post(
            &format!("/api/recordings/{}/restrict", env.lesson),
            json!({"from_ms": 2000, "to_ms": 5000, "reason": "imagery"})
        )
        .await,
        StatusCode::CREATED
    );

    let in_range = |t: u64| (2_000_000..5_000_000).contains(&t);
    // SLT: no chat, no events, no media inside the range.
    let (_, detail) = slt.json(&format!("/api/recordings/{}", env.lesson)).await;
    let text = detail.to_string();
    assert!(
        !text.contains("SECRET") && !text.contains("CONCERN") && !text.contains("imagery"),
        "{text}"
    );
    assert_eq!(
        detail["restricted"],
        json!([{"from_ms": 2000, "to_ms": 5000}])
    );
    for c in detail["chat"]
        .as_array()
        .unwrap()
        .iter()
        .chain(detail["events"].as_array().unwrap())
    {
        assert!(!in_range(c["t_ms"].as_u64().unwrap() * 1000), "{c}");
    }
    for f in ["p1-av.webm", "p2-av.webm"] {
        let (_, webm) = slt
            .get(&format!("/api/recordings/{}/media/{f}", env.lesson))
            .await;
        let blocks = chaperone_review::webm::blocks(&webm);
        assert!(!blocks.is_empty());
        assert!(
            blocks.iter().all(|(_, t, _)| !in_range(*t)),
            "{f}: a block inside the range"
        );
        // Frames 20..=49 (2.0 s to 4.9 s) are not in the bytes at all.
        for i in 20..50 {
            assert!(
                !contains(&webm, &format!("-CAM-{i:03}"))
                    && !contains(&webm, &format!("-MIC-{i:03}")),
                "{f}: frame {i}"
            );
        }
        assert!(
            contains(&webm, "-CAM-019") && contains(&webm, "-CAM-050"),
            "{f}: video resumes at the next keyframe"
        );
    }
    // The DSL, with the restricted scope and its reason, sees all of it.
    let (_, detail) = dsl.json(&format!("/api/recordings/{}", env.lesson)).await;
    let text = detail.to_string();
    assert!(
        text.contains("SECRET private question")
            && text.contains("CONCERN words")
            && text.contains("imagery")
    );
    let (_, webm) = dsl
        .get(&format!("/api/recordings/{}/media/p1-av.webm", env.lesson))
        .await;
    assert!(contains(&webm, "TEACHER-CAM-030") && contains(&webm, "TEACHER-MIC-030"));
    // A pupil's copy never has the range either.
    let pupil = env
        .open("pupil-a", "pupil", ReviewScope::PupilCopy, Some(env.lesson))
        .await;
    let (_, webm) = pupil
        .get(&format!("/api/recordings/{}/media/p1-av.webm", env.lesson))
        .await;
    assert!(!contains(&webm, "TEACHER-CAM-030") && contains(&webm, "TEACHER-CAM-060"));
    let audit = env.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "restrict" && e["reason"] == "imagery" && e["from_ms"] == 2000)
    );
    assert!(audit.iter().any(|e| e["action"] == "view"
        && e["scope"] == "dsl_restricted"
        && e["reason"] == "reason of dsl"));
}

#[tokio::test]
async fn the_search_lists_by_pupil_teacher_date_and_flags() {
    let env = env().await;
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, None)
        .await;
    let (s, all) = slt.json("/api/recordings").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, flagged) = slt.json("/api/recordings?flagged=true").await;
    assert_eq!(flagged.as_array().unwrap().len(), 1);
    assert_eq!(flagged[0]["lesson"], env.lesson.to_string());
    assert_eq!(
        flagged[0]["held"], true,
        "a recording with a concern is on hold"
    );
    let (_, by_pupil) = slt.json("/api/recordings?pupil=bea").await;
    assert_eq!(by_pupil.as_array().unwrap().len(), 2);
    let (_, nobody) = slt.json("/api/recordings?pupil=zed").await;
    assert!(nobody.as_array().unwrap().is_empty());
    let (_, later) = slt
        .json(&format!(
            "/api/recordings?from_ms={}",
            T0 / 1000 + 86_400_000
        ))
        .await;
    assert!(later.as_array().unwrap().is_empty());
    let (_, teacher) = slt.json("/api/recordings?teacher=rivera").await;
    assert_eq!(teacher.as_array().unwrap().len(), 2);
    // A token for one lesson does not list the others.
    let one = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.other))
        .await;
    let (_, list) = one.json("/api/recordings").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        env.audit()
            .await
            .iter()
            .any(|e| e["action"] == "list" && e["file"].as_str().unwrap().contains("pupil=bea"))
    );
}
