//! Retention, legal holds and export bundles: the expired deleted and the
//! held kept (both audited), holds placed and lifted by the DSL with a
//! reason, an export verified with `recorder verify` and opened with `age`
//! alone.
#![allow(clippy::unwrap_used)]
// The process test issues a token for the real clock the binary reads.
#![allow(clippy::disallowed_methods)]

mod support;

#[allow(unused_imports)]
use support::*;

#[tokio::test]
async fn retention_deletes_the_expired_and_keeps_the_held_both_audited() {
    let env = env().await;
    let day = 86_400 * 1_000_000;
    // Before the period nothing happens.
    env.clock.store(T0 + 10 * day, Ordering::SeqCst);
    assert!(env.svc.sweep().await.unwrap().is_empty());
    // After 30 days the standard recording goes; the one with a concern is held.
    env.clock.store(T0 + 400 * day, Ordering::SeqCst);
    let out = env.svc.sweep().await.unwrap();
    let by: std::collections::HashMap<LessonId, &str> =
        out.iter().map(|o| (o.lesson, o.action)).collect();
    assert_eq!(by[&env.other], "deleted");
    assert_eq!(by[&env.lesson], "held");
    // Not one object of it is left (the filesystem store may leave empty directories).
    let left = walk(&env.dir.path().join(format!("store/lessons/{}", env.other)));
    assert!(left.is_empty(), "{left:?}");
    assert!(
        env.dir
            .path()
            .join(format!(
                "store/lessons/{}/segments/0000000000.age",
                env.lesson
            ))
            .exists()
    );
    let audit = env.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "delete" && e["lesson"] == env.other.to_string())
    );
    assert!(audit.iter().any(|e| e["action"] == "retain"
        && e["lesson"] == env.lesson.to_string()
        && e["reason"].as_str().unwrap().contains("legal hold")));
    // The DSL lifts the hold: the next sweep deletes it.
    marks::set_hold(
        env.store.as_ref(),
        &env.lesson,
        &HoldRecord {
            at: T0 + 400 * day,
            by: "dsl".into(),
            held: false,
            reason: "case closed".into(),
        },
    )
    .await
    .unwrap();
    let out = env.svc.sweep().await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].action, "deleted");
    let dsl = env
        .open("dsl", "dsl", ReviewScope::Safeguarding, Some(env.lesson))
        .await;
    let (s, _) = dsl.json(&format!("/api/recordings/{}", env.lesson)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The audit chain survived it all.
    let (ok, out) = recorder(&[
        "verify",
        "--audit",
        "--store",
        env.dir.path().join("store").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn holds_are_placed_and_lifted_by_the_dsl_only_with_a_reason() {
    let env = env().await;
    let slt = env
        .open("slt", "slt", ReviewScope::Safeguarding, Some(env.other))
        .await;
    assert_eq!(
        slt.post(
            &format!("/api/recordings/{}/hold", env.other),
            json!({"held": true, "reason": "x"})
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let dsl = env
        .open("dsl", "dsl", ReviewScope::DslRestricted, Some(env.other))
        .await;
    assert_eq!(
        dsl.post(
            &format!("/api/recordings/{}/hold", env.other),
            json!({"held": true, "reason": ""})
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        dsl.post(
            &format!("/api/recordings/{}/hold", env.other),
            json!({"held": true, "reason": "police enquiry"})
        )
        .await,
        StatusCode::CREATED
    );
    env.clock
        .store(T0 + 400 * 86_400 * 1_000_000, Ordering::SeqCst);
    let out = env.svc.sweep().await.unwrap();
    assert!(out.iter().all(|o| o.action == "held"), "{out:?}");
    let audit = env.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "hold" && e["reason"] == "police enquiry")
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "refused" && e["outcome"] == "forbidden" && e["role"] == "slt")
    );
}

#[tokio::test]
async fn an_export_verifies_with_recorder_verify_and_opens_with_age_alone() {
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
    let untar = Command::new("tar")
        .arg("xf")
        .arg("bundle.tar")
        .current_dir(out.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let lesson = env.lesson.to_string();
    let root = out.path().join(format!("chaperone-export-{lesson}"));
    let report = std::fs::read_to_string(root.join("REPORT.txt")).unwrap();
    assert!(report.contains("RESULT: OK"), "{report}");
    let (ok, text) = recorder(&[
        "verify",
        &lesson,
        "--store",
        root.join("store").to_str().unwrap(),
        "--key",
        env.key_file.to_str().unwrap(),
    ]);
    assert!(
        ok && text.contains("RESULT: OK") && text.contains("(final)"),
        "{text}"
    );
    let age = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&env.identity_file)
        .arg(root.join(format!("store/lessons/{lesson}/segments/0000000001.age")))
        .output()
        .unwrap();
    assert!(
        age.status.success(),
        "{}",
        String::from_utf8_lossy(&age.stderr)
    );
    assert!(age.stdout.starts_with(b"CHAPSEG1"));

    // A time range: only the second segment, verifiable as a partial export.
    let (s, tar) = dsl
        .get(&format!(
            "/api/recordings/{}/export?from_ms=6000&to_ms=8000",
            env.lesson
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let part = tempfile::tempdir().unwrap();
    std::fs::write(part.path().join("b.tar"), &tar).unwrap();
    assert!(
        Command::new("tar")
            .arg("xf")
            .arg("b.tar")
            .current_dir(part.path())
            .status()
            .unwrap()
            .success()
    );
    let store = part.path().join(format!("chaperone-export-{lesson}/store"));
    assert!(
        !store
            .join(format!("lessons/{lesson}/segments/0000000000.age"))
            .exists()
    );
    let readme = std::fs::read_to_string(
        part.path()
            .join(format!("chaperone-export-{lesson}/README.txt")),
    )
    .unwrap();
    assert!(readme.contains("--only-segments 1-1"), "{readme}");
    let (ok, text) = recorder(&[
        "verify",
        &lesson,
        "--store",
        store.to_str().unwrap(),
        "--key",
        env.key_file.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("MISSING"), "{text}");
    let (ok, text) = recorder(&[
        "verify",
        &lesson,
        "--store",
        store.to_str().unwrap(),
        "--key",
        env.key_file.to_str().unwrap(),
        "--only-segments",
        "1-1",
    ]);
    assert!(ok, "{text}");
    assert!(
        env.audit()
            .await
            .iter()
            .any(|e| e["action"] == "export" && e["from_ms"] == 6000)
    );
}
