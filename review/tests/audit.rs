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
