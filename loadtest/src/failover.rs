//! `failover` and `drain`: a lesson31-shaped lesson on three gateway nodes
//! ([`Cluster`]); mid-lesson its owner is killed (`kill -9`) or drained
//! (SIGTERM, as a rolling deploy does). Every participant rejoins as the
//! lesson page does: through any node still up, every 250 ms, with a fresh
//! room token, then a fresh media session.
//!
//! Before the owner goes, the teacher revokes pupil 0's microphone; that
//! pupil's client ignores it and keeps sending, before and after it
//! rejoins. Counted at every receiver, from a second after the revoke
//! (two seconds before the owner goes) until three seconds after everyone
//! is back: packets of pupil 0's microphone (the server must hold: none)
//! and of the other speaking pupils' (they must be heard).
//!
//! Measured at the participants: from the kill (or SIGTERM) to the first
//! media packet of each participant's new media session (p50, p95, max),
//! the joins refused meanwhile (503 `moving` until the lease lapses), and,
//! once the teacher ends the lesson, what `recorder verify` says of its
//! one recording: the gap listed after a kill, none after a drain.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chaperone_protocol::LessonId;
use serde::Serialize;
use tokio::sync::watch;

use crate::clock;
use crate::cluster::Cluster;
use crate::gateway::{self, Session};
use crate::media::RunCtx;
use crate::plan::{Control, ParticipantPlan, ParticipantReport, Role};
use crate::report::Percentiles;
use crate::scenario::{Kind, SPEAKERS, plan};

/// How the lesson's owner goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Going {
    /// `kill -9`.
    Kill,
    /// SIGTERM: a drain, as a rolling deploy does.
    Drain,
    /// SIGSTOP past its lease; a join through another node takes the
    /// lesson over; then SIGCONT (the node must find its lease lost and
    /// never send the lesson another packet).
    Pause,
}

impl Going {
    fn scenario(self) -> &'static str {
        match self {
            Going::Kill => "failover",
            Going::Drain => "drain",
            Going::Pause => "pause",
        }
    }
}

/// How a failover run goes.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// Pupils in the lesson (30 for lesson31).
    pub pupils: usize,
    /// How the owner goes.
    pub going: Going,
    /// Steady lesson before the owner goes.
    pub settle: Duration,
    /// Longest wait for everyone's media to come back.
    pub bound: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    /// `failover` or `drain`.
    pub scenario: String,
    /// Teacher and pupils.
    pub participants: usize,
    /// Seconds from the kill (or SIGTERM) to media back, per participant
    /// back within the bound, sorted.
    pub back_secs: Vec<f64>,
    /// Median of `back_secs`.
    pub p50_secs: f64,
    /// 95th percentile of `back_secs`.
    pub p95_secs: f64,
    /// Slowest.
    pub max_secs: f64,
    /// Participants whose media did not come back within the bound.
    pub not_back: usize,
    /// Join attempts refused after the kill (503 while the lease lapses).
    pub joins_refused: usize,
    /// Packets of the revoked microphone received by anyone, from a second
    /// after the revoke to the end (the server must hold: 0).
    pub revoked_mic_packets: u64,
    /// RTP packets pupil 0's client sent in that time, ignoring the revoke.
    pub revoked_mic_sent: u64,
    /// Packets of the other speaking pupils' microphones received in the
    /// same time (they are heard).
    pub other_mic_packets: u64,
    /// Packets participants received from the old owner once another node
    /// had taken the lesson over (pause only; the fencing must hold: 0).
    pub old_owner_packets_after_takeover: u64,
    /// Whether the recording verifies.
    pub recording_ok: bool,
    /// The gaps it lists: seconds each, and why.
    pub gaps: Vec<(f64, String)>,
}

impl FailoverResult {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let gaps: Vec<String> = self
            .gaps
            .iter()
            .map(|(s, why)| format!("{s:.2} s ({why})"))
            .collect();
        format!(
            "{} on 3 gateway nodes: 1 teacher + {} pupils\n\
             media back after the owner {}: p50 {:.2} s, p95 {:.2} s, max {:.2} s; not back {}\n\
             joins refused meanwhile: {}\n\
             revoked microphone: {} packets sent, {} received (other speakers': {} received)\n\
             {}\n\
             recording verifies: {}; gaps: {}\n",
            self.scenario,
            self.participants.saturating_sub(1),
            match self.scenario.as_str() {
                "drain" => "was drained (SIGTERM)",
                "pause" => "was paused (SIGSTOP) past its lease",
                _ => "was killed (kill -9)",
            },
            self.p50_secs,
            self.p95_secs,
            self.max_secs,
            self.not_back,
            self.joins_refused,
            self.revoked_mic_sent,
            self.revoked_mic_packets,
            self.other_mic_packets,
            if self.scenario == "pause" {
                format!(
                    "packets from the old owner after the takeover: {}",
                    self.old_owner_packets_after_takeover
                )
            } else {
                "(packets from the old owner after the takeover: counted after a pause)".to_owned()
            },
            self.recording_ok,
            if gaps.is_empty() {
                "none".to_owned()
            } else {
                gaps.join("; ")
            },
        )
    }
}

/// Runs one failover (or drain) and reports what the participants saw.
pub async fn run(opts: &FailoverOptions) -> Result<FailoverResult> {
    let scenario = opts.going.scenario();
    let cluster = Rc::new(RefCell::new(Cluster::start(
        3,
        &format!("loadtest-{scenario}"),
    )?));
    let origin = Rc::new(cluster.borrow().public.clone());
    let mut session = Session::login(&origin, "teacher").await?;
    let lesson_id = session.create_lesson("Failover").await?;
    let lesson: LessonId = lesson_id
        .parse()
        .map_err(|e| anyhow::anyhow!("lesson id {lesson_id}: {e:?}"))?;
    let first = session.room_token(&lesson_id).await?;
    let now_secs = clock::unix_ns() / 1_000_000_000;
    let teacher = cluster
        .borrow()
        .issuer
        .verify_room(now_secs, &first)
        .map_err(|e| anyhow::anyhow!("the teacher's room token: {e}"))?;
    let doors = Rc::new(RefCell::new(
        (0..3).map(|i| cluster.borrow().url(i)).collect::<Vec<_>>(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Rc::new(RunCtx {
        window: std::cell::Cell::new((0, 0)),
        stop: stop_rx,
        with_media: std::cell::Cell::new(0),
        fence: std::cell::Cell::new(0),
    });
    let lesson_rc = Rc::new(lesson_id.clone());
    let plans = plan(Kind::Lesson31, 1, opts.pupils);
    let n = plans.len();
    let t0 = clock::now();
    let mut tasks = Vec::new();
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ctl_rx = Some(ctl_rx);
    for (k, p) in plans.into_iter().enumerate() {
        let control = match p.role {
            Role::Teacher => ctl_rx.take(),
            Role::Pupil(_) => None,
        };
        let mint: Box<dyn Fn() -> String> = match p.role {
            Role::Teacher => {
                let (c, t) = (cluster.clone(), teacher.clone());
                Box::new(move || c.borrow().like(&t))
            }
            Role::Pupil(i) => {
                let c = cluster.clone();
                Box::new(move || c.borrow().pupil(lesson, i))
            }
        };
        let after = (t0 + p.start_after).saturating_duration_since(clock::now());
        let (doors, origin, lesson_rc, ctx) = (
            doors.clone(),
            origin.clone(),
            lesson_rc.clone(),
            ctx.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            tokio::time::sleep(after).await;
            rejoining(k, doors, origin, lesson_rc, p, mint, ctx, control).await
        }));
    }

    // Everyone in, with media; then a steady lesson.
    wait_until(Duration::from_secs(60), || ctx.with_media.get() >= n)
        .await
        .with_context(|| {
            format!(
                "only {} of {n} participants got media",
                ctx.with_media.get()
            )
        })?;
    tokio::time::sleep(opts.settle).await;
    // Pupil 0's microphone revoked; counting starts a second later.
    let _ = ctl_tx.send(Control::RevokeMic(0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.window.set((clock::unix_ns(), u64::MAX));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owner = (0..3)
        .find(|&i| {
            cluster
                .borrow()
                .metric(i, "chaperone_cluster_lessons_owned")
                == Some(1.0)
        })
        .context("no node owns the lesson")?;
    doors.borrow_mut().remove(owner);
    let gone_ns = clock::unix_ns();
    match opts.going {
        Going::Drain => cluster.borrow().signal(owner, "TERM")?,
        Going::Kill => cluster.borrow_mut().kill(owner),
        Going::Pause => {
            cluster.borrow().signal(owner, "STOP")?;
            // Past its lease (4 s), a join through another node takes the
            // lesson over (refused with 503 until the lease lapses).
            tokio::time::sleep(Duration::from_secs(5)).await;
            let token = cluster.borrow().like(&teacher);
            let until = clock::now() + Duration::from_secs(20);
            loop {
                let door = doors.borrow()[0].clone();
                match gateway::touch_via(&door, &origin, &lesson_id, &token).await {
                    Ok(()) => break,
                    Err(e) if clock::now() >= until => {
                        let _ = cluster.borrow().signal(owner, "CONT");
                        return Err(e.context("no node took the paused owner's lesson"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            // Taken over: from now on nothing may come from the old owner.
            ctx.fence.set(clock::unix_ns());
            cluster.borrow().signal(owner, "CONT")?;
        }
    }
    // Every participant's new media session has its first packet.
    let back = wait_until(opts.bound, || ctx.with_media.get() >= 2 * n).await;
    if back.is_err() {
        eprintln!(
            "loadtest: {} of {n} participants had media again within {:?}",
            ctx.with_media.get().saturating_sub(n),
            opts.bound
        );
    }
    // A little of the lesson on the new owner, counted too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let mut reports: Vec<Vec<ParticipantReport>> = Vec::new();
    for t in tasks {
        reports.push(t.await.unwrap_or_default());
    }
    if opts.going == Going::Drain
        && let Some(c) = cluster.borrow_mut().child(owner)
    {
        // A drained node exits by itself; reap it.
        let _ = c.wait_exit(Duration::from_secs(40));
    }

    let mic_keys = |n: usize| -> Vec<String> {
        reports
            .iter()
            .flatten()
            .filter(|r| r.pupil == Some(n))
            .filter_map(|r| r.tx_keys.first().cloned())
            .collect()
    };
    let revoked = mic_keys(0);
    let others: Vec<String> = (1..SPEAKERS.min(opts.pupils)).flat_map(mic_keys).collect();
    let revoked_mic_sent = reports
        .iter()
        .flatten()
        .filter(|r| r.pupil == Some(0))
        .map(|r| r.media.tx_packets_in_window)
        .sum();
    let (mut revoked_mic_packets, mut other_mic_packets) = (0, 0);
    for r in reports.iter().flatten() {
        for (ssrc, s) in &r.media.rx {
            match r.rx_key(*ssrc) {
                Some(k) if revoked.contains(k) => revoked_mic_packets += s.packets_in_window,
                Some(k) if others.contains(k) => other_mic_packets += s.packets_in_window,
                _ => {}
            }
        }
    }
    // Every session that started before the owner went had its media from it.
    let old_owner_packets_after_takeover = reports
        .iter()
        .flatten()
        .filter(|r| r.join_start_ns < gone_ns)
        .map(|r| r.media.packets_after_fence)
        .sum();
    let mut back_ns = Vec::new();
    let mut joins_refused = 0;
    for sessions in &reports {
        let after: Vec<&ParticipantReport> = sessions
            .iter()
            .filter(|r| r.join_start_ns >= gone_ns)
            .collect();
        joins_refused += after.iter().filter(|r| r.admitted_ns.is_none()).count();
        if let Some(t) = after.iter().find_map(|r| r.media.first_media_ns) {
            back_ns.push(t.saturating_sub(gone_ns));
        }
    }
    back_ns.sort_unstable();

    // The teacher ends the lesson; its one recording is checked.
    let door = doors.borrow()[0].clone();
    let token = cluster.borrow().like(&teacher);
    gateway::end_lesson_via(&door, &origin, &lesson_id, &token).await?;
    let verified = cluster.borrow().verify(lesson)?;
    let gaps = verified["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"] == "recorded_gap")
        .map(|f| {
            let span = f["to"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(f["from"].as_u64().unwrap_or(0));
            (
                span as f64 / 1e6,
                f["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let pct = Percentiles::of(back_ns.clone(), 1e-9);
    Ok(FailoverResult {
        scenario: scenario.to_owned(),
        participants: n,
        p50_secs: pct.p50,
        p95_secs: pct.p95,
        max_secs: pct.max,
        not_back: n - back_ns.len(),
        back_secs: back_ns.iter().map(|&ns| ns as f64 / 1e9).collect(),
        joins_refused,
        revoked_mic_packets,
        revoked_mic_sent,
        other_mic_packets,
        old_owner_packets_after_takeover,
        recording_ok: verified["ok"] == true && verified["is_final"] == true,
        gaps,
    })
}

/// One participant that rejoins, as the page does, until the run stops:
/// every session it had, in order. `control` goes to its first session.
#[allow(clippy::too_many_arguments)]
async fn rejoining(
    k: usize,
    doors: Rc<RefCell<Vec<String>>>,
    origin: Rc<String>,
    lesson: Rc<String>,
    plan: ParticipantPlan,
    mint: Box<dyn Fn() -> String>,
    ctx: Rc<RunCtx>,
    mut control: Option<tokio::sync::mpsc::UnboundedReceiver<Control>>,
) -> Vec<ParticipantReport> {
    let mut sessions = Vec::new();
    let mut attempt = k;
    loop {
        let door = {
            let d = doors.borrow();
            Rc::new(d[attempt % d.len()].clone())
        };
        attempt += 1;
        let r = gateway::run_participant_via(
            door,
            origin.clone(),
            lesson.clone(),
            plan.clone(),
            mint(),
            ctx.clone(),
            control.take(),
        )
        .await;
        sessions.push(r);
        if *ctx.stop.borrow() {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `done` every 50 ms until it holds, or fails after `bound`.
async fn wait_until(bound: Duration, done: impl Fn() -> bool) -> Result<()> {
    let until = clock::now() + bound;
    while !done() {
        if clock::now() >= until {
            bail!("not within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
