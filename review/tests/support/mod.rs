//! What every review-service test shares: a lesson written by the real
//! writer (sealed with age, signed manifests) in a temporary object store,
//! the review service over real HTTP, review tokens signed by a real key
//! set, viewers with their cookie jars, and the `recorder` binary.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

pub use std::process::Command;
pub use std::sync::Arc;
pub use std::sync::atomic::{AtomicU64, Ordering};
pub use std::time::Duration;

pub use chaperone_archive::keys::RecorderSigningKey;
pub use chaperone_archive::segment::{RecipientSet, Record};
pub use chaperone_archive::writer::{LessonWriter, local_store};
use chaperone_protocol::annotation::{Colour, MarkId, Stroke, Tool};
pub use chaperone_protocol::event::LessonEvent;
pub use chaperone_protocol::feed::{FeedFrame, MediaCodec};
pub use chaperone_protocol::{LessonId, MediaSource, ParticipantId, Role, TrackId, UserRef};
pub use chaperone_recorder::ingest::LessonSink;
pub use chaperone_review::http::{ReviewService, ReviewSettings};
pub use chaperone_review::marks::{self, HoldRecord};
pub use chaperone_tokens::{KeySet, ReviewScope, TokenIssuer};
pub use object_store::ObjectStore;
pub use reqwest::StatusCode;
pub use serde_json::{Value, json};

/// 2026-01-05 09:00:00 UTC, unix microseconds.
pub const T0: u64 = 1_767_603_600_000_000;
pub const ISSUER: &str = "http://gateway.test";
pub const AUD: &str = "chaperone-review";
pub const TEACHER: ParticipantId = ParticipantId(1);
pub const PUPIL_A: ParticipantId = ParticipantId(2);
pub const PUPIL_B: ParticipantId = ParticipantId(3);

pub fn user(sub: &str) -> UserRef {
    UserRef::new("https://idp.test", sub).unwrap()
}

/// A VP8 keyframe (10-byte header, 64x48) or inter frame, carrying `tag`.
pub fn vp8(key: bool, tag: &str) -> Vec<u8> {
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
pub async fn write_lesson(
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
    // Marks on the teacher's shared screen: the teacher's label and pen
    // stroke (extended, later undone), pupil A's label at 2.5 s, pupil B's
    // at 6 s, a laser flash from each, and a clear at 8 s.
    for (at, e) in annotation_events() {
        frames.push(event(T0 + at, e));
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

pub fn with_seq(frame: FeedFrame, s: u64) -> FeedFrame {
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

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub tokens: TokenIssuer,
    pub lesson: LessonId,
    pub other: LessonId,
    pub base: String,
    pub clock: Arc<AtomicU64>,
    pub svc: Arc<ReviewService>,
    pub key_file: std::path::PathBuf,
    pub identity_file: std::path::PathBuf,
}

pub async fn env() -> Env {
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
pub struct Viewer {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
}

impl Env {
    pub fn token(
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

    pub async fn viewer(&self, token: &str) -> (StatusCode, Option<Viewer>) {
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

    pub async fn open(
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

    pub async fn audit(&self) -> Vec<Value> {
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

pub fn rand_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl Viewer {
    pub async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }
    pub async fn json(&self, path: &str) -> (StatusCode, Value) {
        let (s, b) = self.get(path).await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    pub async fn post(&self, path: &str, body: Value) -> StatusCode {
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

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

pub fn recorder(args: &[&str]) -> (bool, String) {
    let out = Command::new(chaperone_testkit::process::binary("recorder").unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A text mark saying `label`.
pub fn label(label: &str) -> Stroke {
    Stroke {
        tool: Tool::Text,
        colour: Colour(0xe0_1b_24),
        width: 200,
        points: vec![[1000, 1000]],
        text: Some(label.to_owned()),
    }
}

/// The annotation events of the test lesson, at microseconds from its start.
pub fn annotation_events() -> Vec<(u64, LessonEvent)> {
    let mark = |n: u64, by: ParticipantId, stroke: Stroke| LessonEvent::Annotated {
        mark: MarkId(n),
        layer: TEACHER,
        participant: by,
        stroke,
    };
    let pen = Stroke {
        tool: Tool::Pen,
        colour: Colour(0x1c_71_d8),
        width: 40,
        points: vec![[2000, 5000], [5000, 5000]],
        text: None,
    };
    let laser = Stroke {
        tool: Tool::Laser,
        colour: Colour(0xff_00_00),
        width: 40,
        points: vec![[7000, 7000]],
        text: None,
    };
    vec![
        (1_500_000, mark(1, TEACHER, label("TEACHER-MARK"))),
        (1_700_000, mark(2, TEACHER, pen)),
        (
            1_800_000,
            LessonEvent::MarkExtended {
                mark: MarkId(2),
                points: vec![[8000, 5000]],
            },
        ),
        (2_500_000, mark(3, PUPIL_A, label("PUPILA-MARK"))),
        (6_000_000, mark(4, PUPIL_B, label("PUPILB-MARK"))),
        (6_500_000, mark(5, PUPIL_B, laser.clone())),
        (6_600_000, mark(6, TEACHER, laser)),
        (
            7_000_000,
            LessonEvent::MarkUndone {
                mark: MarkId(2),
                participant: TEACHER,
            },
        ),
        (
            8_000_000,
            LessonEvent::MarksCleared {
                marks: vec![MarkId(1), MarkId(3), MarkId(4)],
                by: Some(TEACHER),
            },
        ),
    ]
}
