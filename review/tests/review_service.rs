//! The review service over real HTTP, on archives written by the real
//! writer (sealed with age, signed manifests) in a temporary object store,
//! with review tokens signed by a real key set: what each scope is served
//! (API responses *and* the bytes of the WebM files), the audit log and its
//! hash chain checked by the `recorder` binary, retention, and export
//! bundles verified with `recorder verify` and opened with `age` alone.
#![allow(clippy::unwrap_used)]
// The process test issues a token for the real clock the binary reads.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::segment::{RecipientSet, Record};
use chaperone_archive::writer::{LessonWriter, local_store};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::{FeedFrame, MediaCodec};
use chaperone_protocol::{LessonId, MediaSource, ParticipantId, Role, TrackId, UserRef};
use chaperone_recorder::ingest::LessonSink;
use chaperone_review::http::{ReviewService, ReviewSettings};
use chaperone_review::marks::{self, HoldRecord};
use chaperone_tokens::{KeySet, ReviewScope, TokenIssuer};
use object_store::ObjectStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// 2026-01-05 09:00:00 UTC, unix microseconds.
const T0: u64 = 1_767_603_600_000_000;
const ISSUER: &str = "http://gateway.test";
const AUD: &str = "chaperone-review";
const TEACHER: ParticipantId = ParticipantId(1);
const PUPIL_A: ParticipantId = ParticipantId(2);
const PUPIL_B: ParticipantId = ParticipantId(3);

fn user(sub: &str) -> UserRef {
    UserRef::new("https://idp.test", sub).unwrap()
}

/// A VP8 keyframe (10-byte header, 64x48) or inter frame, carrying `tag`.
fn vp8(key: bool, tag: &str) -> Vec<u8> {
    let mut d = if key {
        let mut h = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        h.extend_from_slice(&64u16.to_le_bytes());
        h.extend_from_slice(&48u16.to_le_bytes());
        h
    } else {
        vec![0x01, 0x00, 0x00]
    };
    d.extend_from_slice(tag.as_bytes());
    d
}

/// Writes a 10-second lesson: a teacher and two pupils on camera and mic,
/// public chat at 1 s and 6 s, a private message at 3 s, optionally a
/// pupil's concern at 4 s; two segments; final.
async fn write_lesson(
    store: &Arc<dyn ObjectStore>,
    key: &RecorderSigningKey,
    recipients: &RecipientSet,
    id: LessonId,
    concern: bool,
) {
    let signer = RecorderSigningKey::from_pem(&key.to_pem()).unwrap();
    let writer = LessonWriter::new(store.clone(), id, recipients.clone(), signer);
    let mut sink = LessonSink::new(writer, Duration::from_secs(5));
    let mut frames: Vec<(u64, FeedFrame, Option<String>)> = Vec::new();
    let event = |at: u64, event: LessonEvent| {
        (
            at,
            FeedFrame::Event {
                seq: 0,
                at_micros: at,
                event,
            },
            Some("events".to_owned()),
        )
    };
    for (p, sub, name, role) in [
        (TEACHER, "teacher", "Ms Rivera", Role::Teacher),
        (PUPIL_A, "pupil-a", "Ali", Role::Pupil),
        (PUPIL_B, "pupil-b", "Bea", Role::Pupil),
    ] {
        frames.push(event(
            T0 + p.0 * 1000,
            LessonEvent::Joined {
                participant: p,
                user: user(sub),
                name: name.to_owned(),
                role,
            },
        ));
    }
    for (p, who) in [
        (TEACHER, "TEACHER"),
        (PUPIL_A, "PUPILA"),
        (PUPIL_B, "PUPILB"),
    ] {
        for i in 0..100u64 {
            let at = T0 + 10_000 + i * 100_000;
            let track = TrackId::new(p, MediaSource::Camera);
            frames.push((
                at,
                FeedFrame::Media {
                    seq: 0,
                    track,
                    arrival_micros: at,
                    media_time: 1000 + i * 9000,
                    clock_rate: 90_000,
                    codec: MediaCodec::Vp8,
                    discontinuity: false,
                    data: vp8(i % 10 == 0, &format!("{who}-CAM-{i:03}")),
                },
                Some(track.to_string()),
            ));
            let track = TrackId::new(p, MediaSource::Microphone);
            frames.push((
                at + 1,
                FeedFrame::Media {
                    seq: 0,
                    track,
                    arrival_micros: at + 1,
                    media_time: 5000 + i * 4800,
                    clock_rate: 48_000,
                    codec: MediaCodec::Opus,
                    discontinuity: false,
                    data: format!("{who}-MIC-{i:03}").into_bytes(),
                },
                Some(track.to_string()),
            ));
        }
    }
    let chat = |at: u64, from, to, text: &str| {
        (
            at,
            FeedFrame::Chat {
                seq: 0,
                at_micros: at,
                from,
                to,
                text: text.to_owned(),
            },
            Some("chat".to_owned()),
        )
    };
    frames.push(chat(T0 + 1_000_000, PUPIL_A, None, "hello everyone"));
    frames.push(chat(
        T0 + 3_000_000,
        PUPIL_A,
        Some(TEACHER),
        "SECRET private question",
    ));
    frames.push(chat(T0 + 6_000_000, PUPIL_B, None, "later public message"));
    if concern {
        frames.push(event(
            T0 + 4_000_000,
            LessonEvent::Concern {
                participant: PUPIL_B,
                text: "CONCERN words".to_owned(),
            },
        ));
    }
    frames.push(event(T0 + 9_900_000, LessonEvent::Ended { by: TEACHER }));
    frames.sort_by_key(|f| f.0);
    let mut flushed_first = false;
    for (seq, (at, frame, track)) in frames.into_iter().enumerate() {
        if !flushed_first && at >= T0 + 5_000_000 {
            sink.flush(T0 + 5_000_000).await.unwrap();
            flushed_first = true;
        }
        let frame = with_seq(frame, seq as u64 + 1);
        sink.push(
            Record {
                seq: seq as u64 + 1,
                arrival_unix_micros: at,
                frame: frame.to_bytes().unwrap(),
            },
            track,
        )
        .unwrap();
    }
    sink.finish(T0 + 10_000_000).await.unwrap();
}

fn with_seq(frame: FeedFrame, s: u64) -> FeedFrame {
    match frame {
        FeedFrame::Event {
            at_micros, event, ..
        } => FeedFrame::Event {
            seq: s,
            at_micros,
            event,
        },
        FeedFrame::Chat {
            at_micros,
            from,
            to,
            text,
            ..
        } => FeedFrame::Chat {
            seq: s,
            at_micros,
            from,
            to,
            text,
        },
        FeedFrame::Media {
            track,
            arrival_micros,
            media_time,
            clock_rate,
            codec,
            discontinuity,
            data,
            ..
        } => FeedFrame::Media {
            seq: s,
            track,
            arrival_micros,
            media_time,
            clock_rate,
            codec,
            discontinuity,
            data,
        },
        other => other,
    }
}

struct Env {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    tokens: TokenIssuer,
    lesson: LessonId,
    other: LessonId,
    base: String,
    clock: Arc<AtomicU64>,
    svc: Arc<ReviewService>,
    key_file: std::path::PathBuf,
    identity_file: std::path::PathBuf,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(&dir.path().join("store")).unwrap();
    let identity = age::x25519::Identity::generate();
    let recipients = RecipientSet::new(vec![identity.to_public()]).unwrap();
    let key = RecorderSigningKey::generate().unwrap();
    let lesson = LessonId::from_bytes([0x11; 16]);
    let other = LessonId::from_bytes([0x22; 16]);
    write_lesson(&store, &key, &recipients, lesson, true).await;
    write_lesson(&store, &key, &recipients, other, false).await;
    let key_file = dir.path().join("recorder.pub");
    std::fs::write(&key_file, key.public().to_pem()).unwrap();
    let identity_file = dir.path().join("identity.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &identity_file,
            format!("{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
    }
    let keys = KeySet::from_seed("k1", [7; 32]).unwrap();
    let tokens = TokenIssuer {
        issuer: ISSUER.to_owned(),
        room_audience: ISSUER.to_owned(),
        service_audience: "chaperone-recorder".to_owned(),
        keys: keys.clone(),
    };
    let clock = Arc::new(AtomicU64::new(T0 + 3600 * 1_000_000));
    let c = clock.clone();
    let svc = ReviewService::new(
        store.clone(),
        identity,
        key.public(),
        chaperone_tokens::Verifier::from_jwks(&keys.jwks()).unwrap(),
        ReviewSettings {
            issuer: ISSUER.to_owned(),
            ..ReviewSettings::default()
        },
        Arc::new(move || c.load(Ordering::SeqCst)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/review", listener.local_addr().unwrap());
    let router = axum::Router::new().nest("/review", svc.router());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Env {
        dir,
        store,
        tokens,
        lesson,
        other,
        base,
        clock,
        svc,
        key_file,
        identity_file,
    }
}

/// A viewer with a review cookie.
struct Viewer {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Env {
    fn token(
        &self,
        who: &str,
        role: &str,
        scope: ReviewScope,
        lesson: Option<LessonId>,
        lessons: Vec<LessonId>,
    ) -> String {
        let now = self.clock.load(Ordering::SeqCst) / 1_000_000;
        let reason = (scope != ReviewScope::PupilCopy).then(|| format!("reason of {who}"));
        self.tokens
            .issue_review(
                now,
                120,
                format!("jti-{who}-{now}-{}", rand_suffix()),
                AUD,
                user(who),
                who.to_owned(),
                role,
                scope,
                lesson,
                lessons,
                reason,
            )
            .unwrap()
    }

    async fn viewer(&self, token: &str) -> (StatusCode, Option<Viewer>) {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/session", self.base))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let cookie = r
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let viewer = cookie.map(|c| {
            assert!(
                c.contains("HttpOnly")
                    && c.contains("SameSite=Strict")
                    && c.contains("Path=/review"),
                "{c}"
            );
            Viewer {
                http,
                base: self.base.clone(),
                cookie: c.split(';').next().unwrap().to_owned(),
            }
        });
        (status, viewer)
    }

    async fn open(
        &self,
        who: &str,
        role: &str,
        scope: ReviewScope,
        lesson: Option<LessonId>,
    ) -> Viewer {
        let (status, v) = self
            .viewer(&self.token(who, role, scope, lesson, Vec::new()))
            .await;
        assert_eq!(status, StatusCode::OK);
        v.unwrap()
    }

    async fn audit(&self) -> Vec<Value> {
        self.svc
            .audit_log()
            .entries()
            .await
            .unwrap()
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }
}

fn rand_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl Viewer {
    async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }
    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let (s, b) = self.get(path).await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> StatusCode {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

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
    assert!(
        audit
            .iter()
            .filter(|e| e["outcome"] == "unauthenticated")
            .count()
            >= 7
    );
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

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn recorder(args: &[&str]) -> (bool, String) {
    let out = Command::new(chaperone_testkit::process::binary("recorder").unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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

/// `recorder review` as its own process: the gateway's JWKS from a file,
/// the review identity and the recorder key from files, on a free port.
#[tokio::test]
async fn recorder_review_runs_as_its_own_process() {
    let env = env().await;
    let jwks = env.dir.path().join("jwks.json");
    std::fs::write(&jwks, env.tokens.keys.jwks().to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chaperone_testkit::process::binary("recorder").unwrap())
        .args([
            "review",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
        ])
        .arg(env.dir.path().join("store"))
        .arg("--identity")
        .arg(&env.identity_file)
        .arg("--recorder-key")
        .arg(&env.key_file)
        .args(["--issuer", ISSUER, "--jwks"])
        .arg(&jwks)
        .env("CHAPERONE_LOG", "warn")
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let base = format!("http://127.0.0.1:{port}/review");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "recorder review did not listen");
    // The clock is the real one here: a token issued now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = env
        .tokens
        .issue_review(
            now,
            60,
            "p1".into(),
            AUD,
            user("dsl"),
            "Mrs Chen".into(),
            "dsl",
            ReviewScope::DslRestricted,
            Some(env.lesson),
            vec![],
            Some("process test".into()),
        )
        .unwrap();
    let r = http
        .post(format!("{base}/session"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = http
        .get(format!("{base}/api/recordings/{}", env.lesson))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let detail: Value = r.json().await.unwrap();
    assert!(detail.to_string().contains("SECRET private question"));
    let r = http
        .get(format!(
            "{base}/api/recordings/{}/media/p1-av.webm",
            env.lesson
        ))
        .header("cookie", &cookie)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-type"], "video/webm");
    let r = http
        .get(format!("{base}/api/recordings/{}", env.lesson))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
