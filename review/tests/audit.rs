//! The review audit log: every refusal is a record (refusals without a
//! session: the first of each kind, the rest summed), and the hash chain,
//! checked by the `recorder` binary, names a deleted or edited record.
#![allow(clippy::unwrap_used)]
// The process test issues a token for the real clock the binary reads.
#![allow(clippy::disallowed_methods)]

mod support;

#[allow(unused_imports)]
use support::*;

#[tokio::test]
async fn refusals_are_audited() {
    let env = env().await;
    // No session at all.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/api/recordings/{}", env.base, env.lesson))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!(
            "{}/api/recordings/{}/media/p1-av.webm",
            env.base, env.lesson
        ))
        .header("cookie", "chaperone_review=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Tokens signed by another key, for another audience, expired.
    let stranger = TokenIssuer {
        keys: KeySet::from_seed("k1", [9; 32]).unwrap(),
        ..env.tokens.clone()
    };
    let now = env.clock.load(Ordering::SeqCst) / 1_000_000;
    let forged = stranger
        .issue_review(
            now,
            60,
            "j1".into(),
            AUD,
            user("slt"),
            "x".into(),
            "slt",
            ReviewScope::Safeguarding,
            None,
            vec![],
            Some("r".into()),
        )
        .unwrap();
    let wrong_aud = env
        .tokens
        .issue_review(
            now,
            60,
            "j2".into(),
            "someone-else",
            user("slt"),
            "x".into(),
            "slt",
            ReviewScope::Safeguarding,
            None,
            vec![],
            Some("r".into()),
        )
        .unwrap();
    let expired = env
        .tokens
        .issue_review(
            now - 1000,
            60,
            "j3".into(),
            AUD,
            user("slt"),
            "x".into(),
            "slt",
            ReviewScope::Safeguarding,
            None,
            vec![],
            Some("r".into()),
        )
        .unwrap();
    // A pupil's token claiming the safeguarding scope, and one without a reason.
    let pupil_as_slt = env
        .tokens
        .issue_review(
            now,
            60,
            "j4".into(),
            AUD,
            user("p"),
            "x".into(),
            "pupil",
            ReviewScope::Safeguarding,
            None,
            vec![],
            Some("r".into()),
        )
        .unwrap();
    let no_reason = env
        .tokens
        .issue_review(
            now,
            60,
            "j5".into(),
            AUD,
            user("slt"),
            "x".into(),
            "slt",
            ReviewScope::Safeguarding,
            None,
            vec![],
            None,
        )
        .unwrap();
    for t in [forged, wrong_aud, expired, pupil_as_slt, no_reason] {
        let (status, v) = env.viewer(&t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(v.is_none());
    }
    let audit = env.audit().await;
    let refused: Vec<&str> = audit
        .iter()
        .filter(|e| e["action"] == "refused")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    for code in ["bad_signature", "wrong_audience", "expired", "malformed"] {
        assert!(
            refused.iter().any(|r| r.contains(code)),
            "{code}: {refused:?}"
        );
    }
    // Refusals without a session (issue 17): the first of each kind is a
    // record at once; a repeat (two tokens refused as `malformed`) is
    // counted and summed when the window closes.
    let unauthenticated = |audit: &[serde_json::Value]| {
        audit
            .iter()
            .filter(|e| e["outcome"] == "unauthenticated")
            .count()
    };
    assert!(unauthenticated(&audit) >= 6, "{audit:#?}");
    env.svc.flush_anonymous(true).await;
    let audit = env.audit().await;
    assert!(unauthenticated(&audit) >= 7, "{audit:#?}");
    assert!(
        audit.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("summary: "))),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn the_audit_chain_names_a_deleted_or_edited_record() {
    let env = env().await;
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    for _ in 0..3 {
        slt.json(&format!("/api/recordings/{}", env.lesson)).await;
    }
    let store_dir = env.dir.path().join("store");
    let store = store_dir.to_str().unwrap();
    let (ok, out) = recorder(&["verify", "--audit", "--store", store]);
    assert!(ok && out.contains("AUDIT: OK"), "{out}");
    // verify <lesson> checks the audit chain too.
    let lesson = env.lesson.to_string();
    let (ok, out) = recorder(&[
        "verify",
        &lesson,
        "--store",
        store,
        "--key",
        env.key_file.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("RESULT: OK") && out.contains("AUDIT: OK"),
        "{out}"
    );

    // Edit record 2's reason.
    let path = store_dir.join("audit/000000000002.json");
    let original = std::fs::read(&path).unwrap();
    let edited = String::from_utf8(original.clone())
        .unwrap()
        .replace("reason of slt", "nothing to see");
    assert_ne!(edited.as_bytes(), original);
    std::fs::write(&path, &edited).unwrap();
    let (ok, out) = recorder(&["verify", "--audit", "--store", store]);
    assert!(!ok && out.contains("audit record 2 was edited"), "{out}");
    let (ok, out) = recorder(&[
        "verify",
        &lesson,
        "--store",
        store,
        "--key",
        env.key_file.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("AUDIT: FAILED"), "{out}");
    std::fs::write(&path, &original).unwrap();
    // Delete record 1.
    std::fs::remove_file(store_dir.join("audit/000000000001.json")).unwrap();
    let (ok, out) = recorder(&["verify", "--audit", "--store", store]);
    assert!(!ok && out.contains("audit record 1 is missing"), "{out}");
}

/// A burst (issue 17): concurrent refusals without a session and concurrent
/// attributed views become a bounded number of audit objects (the
/// anonymous ones summed, the attributed ones batched), the chain verifies,
/// and every attributed record is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_becomes_few_audit_objects_with_every_attributed_record() {
    let env = env().await;
    let objects = |env: &Env| {
        walk(&env.dir.path().join("store/audit"))
            .into_iter()
            .filter(|p| p.is_file())
            .count()
    };
    let before = objects(&env);
    const ANONYMOUS: usize = 300;
    const VIEWERS: usize = 40;
    let http = reqwest::Client::new();
    let anonymous = (0..ANONYMOUS).map(|_| {
        let (http, url) = (
            http.clone(),
            format!("{}/api/recordings/{}", env.base, env.lesson),
        );
        async move { http.get(url).send().await.unwrap().status() }
    });
    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        viewers.push(
            env.open(
                &format!("slt{i}"),
                "slt",
                ReviewScope::Safeguarding,
                Some(env.lesson),
            )
            .await,
        );
    }
    let opened = objects(&env);
    let path = format!("/api/recordings/{}", env.lesson);
    let views = viewers.iter().map(|v| v.json(&path));
    let (refused, viewed) = tokio::join!(
        futures_util::future::join_all(anonymous),
        futures_util::future::join_all(views)
    );
    assert!(refused.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert!(
        viewed.iter().all(|(s, _)| *s == StatusCode::OK),
        "{viewed:?}"
    );
    let written = objects(&env) - opened;
    // Without batching: one object per view at least, and the anonymous
    // refusals' first-of-a-kind records.
    assert!(
        written < VIEWERS,
        "{written} audit objects for {VIEWERS} concurrent views and {ANONYMOUS} refusals"
    );
    let audit = env.audit().await;
    for i in 0..VIEWERS {
        let who = format!("https://idp.test#slt{i}");
        assert!(
            audit
                .iter()
                .any(|e| e["actor"] == who.as_str() && e["action"] == "view"),
            "no view by slt{i}"
        );
    }
    assert!(
        audit
            .iter()
            .filter(|e| e["outcome"] == "unauthenticated")
            .count()
            <= 2,
        "anonymous refusals are summed, not written one by one"
    );
    let store = env.dir.path().join("store");
    let (ok, out) = recorder(&["verify", "--audit", "--store", store.to_str().unwrap()]);
    assert!(ok && out.contains("AUDIT: OK"), "{out}");
    assert!(opened >= before);
}
