//! `soak`: lesson31-shaped lessons that start, run and end in turn against
//! one gateway, for a long time, to show whether the gateway ends where it
//! began.
//!
//! Each lesson: the teacher creates it through the API, joins with a room
//! token and publishes (audio, camera, screen); the pupils join over the
//! lesson socket (three speaking), are admitted and take their media; some
//! leave part-way and come back with a new token (a reconnect), some leave
//! for good; then the teacher ends the lesson over signaling
//! (`end_lesson`), everyone is told goodbye, and the soak waits (bounded)
//! for the gateway to report no lesson live before the next one starts.
//!
//! Between lessons it samples the gateway process: resident memory
//! (`VmRSS`), open descriptors (`/proc/<pid>/fd`), threads, and from its
//! metrics listener the tokio runtime's alive tasks and `lessons_live`.
//! Each sample is taken once the lesson is wholly gone: no lesson live, and
//! the embedded recorder has closed the lesson's recording.
//! The verdict compares the end with the first samples taken after a
//! lesson has come and gone (the warm baseline: the first lesson pays
//! one-off costs such as the runtime's worker threads, the allocator's
//! arenas and the media socket's buffers), and also shows the cold figures
//! from before any lesson, so nothing is hidden: memory within 10 % (the
//! median of the last [`MEDIAN_OF`] samples against the median of the
//! first, so that one sample caught mid-release does not decide), and
//! exactly the same lessons live and descriptors, and no more tasks.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::gateway::{self, Gateway, Session};
use crate::media::RunCtx;
use crate::plan::{Control, ParticipantPlan, ParticipantReport, Role};
use crate::procfs;
use crate::scenario::{Kind, plan};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The gateway binary.
    pub gateway: PathBuf,
    /// Start no new lesson after this long.
    pub duration: Duration,
    /// How long each lesson runs before the teacher ends it.
    pub lesson: Duration,
    /// Pupils per lesson.
    pub pupils: usize,
    /// CPU the gateway is pinned to.
    pub server_cpu: Option<usize>,
    /// Show the gateway's log.
    pub server_log: bool,
}

/// The gateway's figures at one moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the soak started.
    pub at_secs: f64,
    /// Lessons ended so far.
    pub lessons_done: usize,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Threads of the process.
    pub threads: u64,
    /// Tasks alive in its tokio runtime (`tokio_alive_tasks`).
    pub tokio_tasks: Option<i64>,
    /// Lessons it runs (`lessons_live`).
    pub lessons_live: Option<i64>,
}

/// One lesson of the soak.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LessonReport {
    /// Its number in the soak.
    pub n: usize,
    /// Joins attempted (first joins and reconnects).
    pub joins: usize,
    /// Joins admitted.
    pub admitted: usize,
    /// Reconnects admitted.
    pub reconnects_admitted: usize,
    /// Participants told the lesson ended.
    pub told_ended: usize,
    /// What went wrong otherwise, one line each.
    pub failures: Vec<String>,
    /// Seconds from `end_lesson` until the gateway reported no lesson live
    /// (`None`: it did not, within the bound).
    pub closed_after_secs: Option<f64>,
}

/// The whole soak.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    /// Always `soak`.
    pub scenario: String,
    /// Seconds it ran.
    pub secs: f64,
    /// Pupils per lesson.
    pub pupils: usize,
    /// Seconds each lesson ran.
    pub lesson_secs: f64,
    /// Every lesson.
    pub lessons: Vec<LessonReport>,
    /// Before any lesson.
    pub cold: Sample,
    /// After the first lesson ended (what the verdict compares with).
    pub baseline: Sample,
    /// After the last lesson ended.
    pub end: Sample,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Resident memory the verdict compares: the median of the first
    /// [`MEDIAN_OF`] samples after a lesson, KiB.
    pub baseline_rss_kib: u64,
    /// ... and the median of the last [`MEDIAN_OF`], KiB.
    pub end_rss_kib: u64,
    /// `end_rss_kib` relative to `baseline_rss_kib` (1.0 = the same).
    pub rss_ratio: f64,
    /// What did not return to the baseline (empty: it ended where it began).
    pub leaks: Vec<String>,
    /// Whether it ended where it began.
    pub holds: bool,
}

impl SoakResult {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let s = |x: &Sample| {
            format!(
                "rss {:.1} MiB, fds {}, threads {}, tokio tasks {}, lessons live {}",
                x.rss_kib as f64 / 1024.0,
                x.fds,
                x.threads,
                x.tokio_tasks.map_or("?".to_owned(), |t| t.to_string()),
                x.lessons_live.map_or("?".to_owned(), |t| t.to_string()),
            )
        };
        let joins: usize = self.lessons.iter().map(|l| l.joins).sum();
        let admitted: usize = self.lessons.iter().map(|l| l.admitted).sum();
        let reconnects: usize = self.lessons.iter().map(|l| l.reconnects_admitted).sum();
        let failures: usize = self.lessons.iter().map(|l| l.failures.len()).sum();
        let mut out = format!(
            "soak on chaperone: {} lessons of 1 teacher + {} pupils, {:.0} s each, over {:.0} s\n\
             joins {joins}, admitted {admitted}, reconnects admitted {reconnects}, other failures {failures}\n\
             cold (before any lesson): {}\n\
             baseline (first lesson ended): {}\n\
             end (last lesson ended): {}\n\
             memory at the end: {:+.1} % of the baseline (median of the last {MEDIAN_OF} samples, {} KiB, against the first {MEDIAN_OF}, {} KiB)\n",
            self.lessons.len(),
            self.pupils,
            self.lesson_secs,
            self.secs,
            s(&self.cold),
            s(&self.baseline),
            s(&self.end),
            (self.rss_ratio - 1.0) * 100.0,
            self.end_rss_kib,
            self.baseline_rss_kib,
        );
        if self.holds {
            out.push_str("SOAK: ends where it began\n");
        } else {
            for l in &self.leaks {
                out.push_str(&format!("LEAK: {l}\n"));
            }
            out.push_str("SOAK: does NOT end where it began\n");
        }
        out
    }
}

/// One participant while it runs.
struct Running {
    pupil: Option<usize>,
    reconnect: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<ParticipantReport>,
}

fn ctx() -> (watch::Sender<bool>, Rc<RunCtx>) {
    let (tx, rx) = watch::channel(false);
    (
        tx,
        Rc::new(RunCtx {
            window: std::cell::Cell::new((0, 0)),
            stop: rx,
            with_media: std::cell::Cell::new(0),
            fence: std::cell::Cell::new(0),
        }),
    )
}

/// Starts one participant after `after`.
fn spawn(
    base: &Rc<String>,
    lesson: &Rc<String>,
    plan: ParticipantPlan,
    token: String,
    control: Option<mpsc::UnboundedReceiver<Control>>,
    after: Duration,
    reconnect: bool,
) -> Running {
    let (stop, ctx) = ctx();
    let (base, lesson) = (base.clone(), lesson.clone());
    let pupil = match plan.role {
        Role::Pupil(n) => Some(n),
        Role::Teacher => None,
    };
    let task = tokio::task::spawn_local(async move {
        tokio::time::sleep(after).await;
        gateway::run_participant(base, lesson, plan, token, ctx, control).await
    });
    Running {
        pupil,
        reconnect,
        stop,
        task,
    }
}

/// Stops `r` (if it has not stopped) and notes what it saw.
async fn finish(r: Running, report: &mut LessonReport) {
    let _ = r.stop.send(true);
    let who = match r.pupil {
        Some(n) => format!("pupil {n}"),
        None => "teacher".to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(20), r.task).await {
        Ok(Ok(p)) => {
            if p.admitted_ns.is_some() {
                report.admitted += 1;
                if r.reconnect {
                    report.reconnects_admitted += 1;
                }
            }
            match p.failure {
                Some(f) if f.contains("Ended") => report.told_ended += 1,
                Some(f) => report.failures.push(format!("{who}: {f}")),
                None => {}
            }
        }
        Ok(Err(e)) => report.failures.push(format!("{who}: task panicked: {e}")),
        Err(_) => report
            .failures
            .push(format!("{who}: did not stop within 20 s")),
    }
}

/// Pupil `n` leaves part-way and reconnects.
fn reconnects(n: usize) -> bool {
    n % 5 == 1
}

/// Pupil `n` leaves part-way for good.
fn leaves(n: usize) -> bool {
    n % 5 == 2
}

/// One lesson: create, join, churn, end; waits until it is closed.
async fn lesson(
    gw: &Gateway,
    teacher: &mut Session,
    n: usize,
    opts: &SoakOptions,
    t_start: Instant,
) -> Result<LessonReport> {
    let mut report = LessonReport {
        n,
        ..LessonReport::default()
    };
    let base = Rc::new(gw.base.clone());
    let id = Rc::new(teacher.create_lesson(&format!("Soak {n}")).await?);
    let t0 = clock::now();
    let mut running: Vec<Running> = Vec::new();
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let mut ctl_rx = Some(ctl_rx);
    for p in plan(Kind::Lesson31, 1, opts.pupils) {
        let token = match p.role {
            Role::Teacher => teacher.room_token(&id).await?,
            Role::Pupil(k) => gw.mint_pupil(&id, k)?,
        };
        let control = match p.role {
            Role::Teacher => ctl_rx.take(),
            Role::Pupil(_) => None,
        };
        let after = (t0 + p.start_after).saturating_duration_since(clock::now());
        report.joins += 1;
        running.push(spawn(&base, &id, p, token, control, after, false));
    }
    // Part-way: some pupils leave; those that reconnect come back a second later.
    tokio::time::sleep_until((t0 + opts.lesson * 2 / 5).into()).await;
    let (going, staying): (Vec<Running>, Vec<Running>) = running
        .into_iter()
        .partition(|r| r.pupil.is_some_and(|k| reconnects(k) || leaves(k)));
    running = staying;
    for r in going {
        let k = r.pupil.context("only pupils leave")?;
        finish(r, &mut report).await;
        if reconnects(k) {
            let token = gw.mint_pupil(&id, k)?;
            let p = plan(Kind::Lesson31, 1, opts.pupils)
                .into_iter()
                .find(|p| p.role == Role::Pupil(k))
                .context("the pupil is in the plan")?;
            report.joins += 1;
            running.push(spawn(
                &base,
                &id,
                p,
                token,
                None,
                Duration::from_secs(1),
                true,
            ));
        }
    }
    tokio::time::sleep_until((t0 + opts.lesson).into()).await;
    let ended = clock::now();
    let _ = ctl_tx.send(Control::EndLesson);
    // Everyone is told goodbye; whoever is still there after a bound is stopped.
    let bound = clock::now() + Duration::from_secs(10);
    while running.iter().any(|r| !r.task.is_finished()) && clock::now() < bound {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in running {
        finish(r, &mut report).await;
    }
    // The gateway closes the lesson: bounded wait for no lesson live.
    let bound = ended + Duration::from_secs(30);
    loop {
        if gw.metric("lessons_live").await? == Some(0) {
            report.closed_after_secs = Some((clock::now() - ended).as_secs_f64());
            break;
        }
        if clock::now() >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Then the lesson's recording: the embedded recorder writes the last
    // checkpoint and closes its lesson a moment after the feed's `End`.
    // Sampling before that would count memory still held for the lesson
    // (bounded wait; a gateway with an external recorder has no such gauge).
    let bound = clock::now() + Duration::from_secs(15);
    while matches!(gw.metric("recorder_lessons_active").await?, Some(n) if n > 0)
        && clock::now() < bound
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "soak: {:>5.0} s lesson {n}: joins {}, admitted {}, reconnects admitted {}, told ended {}, closed after {}{}",
        (clock::now() - t_start).as_secs_f64(),
        report.joins,
        report.admitted,
        report.reconnects_admitted,
        report.told_ended,
        report
            .closed_after_secs
            .map_or("never (30 s bound)".to_owned(), |s| format!("{s:.1} s")),
        if report.failures.is_empty() {
            String::new()
        } else {
            format!(", failures: {}", report.failures.join("; "))
        }
    );
    Ok(report)
}

async fn sample(gw: &Gateway, pid: u32, t_start: Instant, lessons_done: usize) -> Result<Sample> {
    // Let what a lesson's end set going (feed flush, sealing) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Sample {
        at_secs: (clock::now() - t_start).as_secs_f64(),
        lessons_done,
        rss_kib: procfs::rss_kib(pid)?,
        fds: procfs::fd_count(pid)?,
        threads: procfs::threads(pid)?,
        tokio_tasks: gw.metric("tokio_alive_tasks").await?,
        lessons_live: gw.metric("lessons_live").await?,
    })
}

/// How many samples after lessons the memory verdict takes the median of,
/// at the start and at the end: a lesson's last allocations may still be
/// on their way back to the allocator when one sample is taken, and one
/// sample against one sample measures that, not what stays.
pub const MEDIAN_OF: usize = 5;

/// The median resident memory of `samples`, KiB (0 for none).
pub fn median_rss(samples: &[Sample]) -> u64 {
    let mut v: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// What did not come back to the baseline: memory by the medians
/// `(baseline_rss, end_rss)`, the rest sample against sample.
pub fn leaks(
    cold: &Sample,
    baseline: &Sample,
    end: &Sample,
    (baseline_rss, end_rss): (u64, u64),
) -> (f64, Vec<String>) {
    let mut out = Vec::new();
    let ratio = end_rss as f64 / baseline_rss.max(1) as f64;
    if !(0.9..=1.1).contains(&ratio) {
        out.push(format!(
            "memory: {end_rss} KiB at the end against {baseline_rss} KiB after the first lessons ({:+.1} %, medians of {MEDIAN_OF} samples)",
            (ratio - 1.0) * 100.0
        ));
    }
    if end.lessons_live != cold.lessons_live {
        out.push(format!(
            "lessons live: {:?} at the end against {:?} before any lesson",
            end.lessons_live, cold.lessons_live
        ));
    }
    if end.fds != baseline.fds {
        out.push(format!(
            "descriptors: {} at the end against {} after the first lesson",
            end.fds, baseline.fds
        ));
    }
    // Fewer tasks than after the first lesson is not a leak (that lesson
    // may leave a task that goes later, e.g. a connection's last write);
    // more is.
    let tasks_grew = match (end.tokio_tasks, baseline.tokio_tasks) {
        (Some(e), Some(b)) => e > b,
        (e, b) => e != b,
    };
    if tasks_grew {
        out.push(format!(
            "tokio tasks: {:?} at the end against {:?} after the first lesson",
            end.tokio_tasks, baseline.tokio_tasks
        ));
    }
    (ratio, out)
}

/// Runs the soak on a fresh gateway.
pub async fn run(opts: &SoakOptions) -> Result<SoakResult> {
    let mut gw = Gateway::start(&opts.gateway, None, opts.server_cpu, opts.server_log)?;
    let pid = gw.pid()?;
    let t_start = clock::now();
    let mut teacher = Session::login(&gw.base, "teacher")
        .await
        .context("teacher sign-in through the development identity provider")?;
    let cold = sample(&gw, pid, t_start, 0).await?;
    eprintln!("soak: cold {cold:?}");
    let mut samples = vec![cold.clone()];
    let mut lessons = Vec::new();
    // At least two lessons: the baseline is taken after the first.
    while lessons.len() < 2 || (clock::now() - t_start) < opts.duration {
        let r = lesson(&gw, &mut teacher, lessons.len(), opts, t_start).await?;
        lessons.push(r);
        gw.check_running()
            .context("the gateway died during the soak")?;
        let s = sample(&gw, pid, t_start, lessons.len()).await?;
        eprintln!("soak: {s:?}");
        samples.push(s);
    }
    // The session and its cookies go too before the last look.
    drop(teacher);
    let end = sample(&gw, pid, t_start, lessons.len()).await?;
    eprintln!("soak: end {end:?}");
    samples.push(end.clone());
    let baseline = samples[1].clone();
    // The samples taken after each lesson, in order (not the cold one, nor
    // the end one, taken a moment after the last lesson's).
    let after = &samples[1..samples.len() - 1];
    let k = MEDIAN_OF.min(after.len());
    let baseline_rss_kib = median_rss(&after[..k]);
    let end_rss_kib = median_rss(&after[after.len() - k..]);
    let (rss_ratio, leaks) = leaks(&cold, &baseline, &end, (baseline_rss_kib, end_rss_kib));
    Ok(SoakResult {
        scenario: "soak".to_owned(),
        secs: (clock::now() - t_start).as_secs_f64(),
        pupils: opts.pupils,
        lesson_secs: opts.lesson.as_secs_f64(),
        holds: leaks.is_empty(),
        lessons,
        cold,
        baseline,
        end,
        samples,
        baseline_rss_kib,
        end_rss_kib,
        rss_ratio,
        leaks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rss_kib: u64, fds: usize, tasks: i64, live: i64) -> Sample {
        Sample {
            at_secs: 0.0,
            lessons_done: 0,
            rss_kib,
            fds,
            threads: 4,
            tokio_tasks: Some(tasks),
            lessons_live: Some(live),
        }
    }

    #[test]
    fn the_verdict_names_every_figure_that_did_not_come_back() {
        let cold = s(50_000, 20, 10, 0);
        let base = s(60_000, 22, 12, 0);
        let m = |end: &Sample| (base.rss_kib, end.rss_kib);
        let end = s(65_000, 22, 12, 0);
        assert!(leaks(&cold, &base, &end, m(&end)).1.is_empty());
        let end = s(70_000, 23, 14, 1);
        let (_, l) = leaks(&cold, &base, &end, m(&end));
        assert_eq!(l.len(), 4, "{l:?}");
        assert!(l[0].starts_with("memory") && l[1].starts_with("lessons live"));
        assert!(l[2].starts_with("descriptors") && l[3].starts_with("tokio tasks"));
        // One task fewer than after the first lesson: nothing leaked.
        let end = s(60_000, 22, 11, 0);
        assert!(leaks(&cold, &base, &end, m(&end)).1.is_empty());
    }

    #[test]
    fn memory_is_judged_by_medians_so_one_late_sample_does_not_decide() {
        let rss = |v: &[u64]| -> Vec<Sample> { v.iter().map(|&r| s(r, 20, 10, 0)).collect() };
        assert_eq!(median_rss(&rss(&[45_000, 53_000, 45_500])), 45_500);
        assert_eq!(median_rss(&rss(&[])), 0);
        // A spike in the last sample alone is not where it ended...
        let cold = s(20_000, 20, 10, 0);
        let (base, end) = (s(45_000, 20, 10, 0), s(53_000, 20, 10, 0));
        let medians = (
            median_rss(&rss(&[45_000, 45_200, 45_100])),
            median_rss(&rss(&[45_300, 45_600, 53_000])),
        );
        assert!(leaks(&cold, &base, &end, medians).1.is_empty());
        // ...but memory that stays up is.
        let medians = (45_100, median_rss(&rss(&[52_000, 53_000, 52_500])));
        assert_eq!(leaks(&cold, &base, &end, medians).1.len(), 1);
    }

    #[test]
    fn some_pupils_reconnect_and_some_leave() {
        let r: Vec<usize> = (0..10).filter(|&n| reconnects(n)).collect();
        let l: Vec<usize> = (0..10).filter(|&n| leaves(n)).collect();
        assert_eq!((r, l), (vec![1, 6], vec![2, 7]));
    }
}
