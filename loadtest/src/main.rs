//! `loadtest`: runs Chaperone's benchmark scenarios against the gateway
//! (and, for comparison, Janus) and writes a JSON result and a summary for
//! each. See `loadtest --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chaperone_loadtest::report::ScenarioResult;
use chaperone_loadtest::scenario::{self, Kind, RunOptions, TargetKind};
use clap::error::ErrorKind;
use clap::{Parser, ValueEnum};

/// What `--help` ends with.
const AFTER_HELP: &str = "\
Examples:
  loadtest lesson31 --lessons 4 --server-cpu 0 --out bench-results/run-1
  loadtest all --server-cpu 0 --out bench-results/run-1   (what scripts/bench.sh runs)
  loadtest median bench-results/run-*/
  loadtest soak --soak-secs 1800 --out bench-results/soak   (lessons in turn; memory, descriptors, tasks)

Exit status:
  0  every scenario ran (or the medians were written)
  1  a scenario failed or errored (a server did not start, a participant task failed, ...),
     or a soak did not end where it began
  2  usage: an unknown option or scenario, a missing or malformed value";

/// Runs Chaperone's benchmark scenarios against the gateway (and, for
/// comparison, Janus) and prints a summary of each; with `--out`, writes a
/// JSON result per scenario too.
#[derive(Debug, Parser)]
// A later occurrence of an option wins, as `scripts/bench.sh` relies on: its own
// `--server-cpu` and `--out` come after the arguments it is given.
#[command(name = "loadtest", version, after_help = AFTER_HELP, args_override_self = true)]
struct Args {
    /// The scenario to run.
    #[arg(value_enum, value_name = "SCENARIO")]
    scenario: Scenario,
    /// With `median` only: the run directories (`--out` directories of earlier runs).
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Server under test [default: chaperone; `all` runs both].
    #[arg(long, value_enum)]
    target: Option<Target>,
    /// Concurrent lessons [default: 8 for lesson31*, 1 otherwise].
    #[arg(long, value_name = "N")]
    lessons: Option<usize>,
    /// Pupils per lesson (fewer only for smoke runs).
    #[arg(long, value_name = "N", default_value_t = scenario::PUPILS)]
    pupils: usize,
    /// Measurement window, in seconds, in (0, 600].
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = duration_secs)]
    duration: f64,
    /// Settling time before the window, in seconds, in [0, 60].
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = warmup_secs)]
    warmup: f64,
    /// Pin the server to CPU N with taskset.
    #[arg(long, value_name = "N")]
    server_cpu: Option<usize>,
    /// Gateway binary [default: next to this one].
    #[arg(long, value_name = "PATH")]
    gateway: Option<PathBuf>,
    /// Record with a `recorder serve` process of its own (on the server's
    /// CPU) instead of the gateway's embedded recorder, and report its CPU
    /// per lesson.
    #[arg(long)]
    recorder_process: bool,
    /// Recorder binary [default: next to this one].
    #[arg(long, value_name = "PATH")]
    recorder: Option<PathBuf>,
    /// Janus binary.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/janus")]
    janus: PathBuf,
    /// Janus configuration [default: loadtest/janus of this source tree].
    #[arg(long, value_name = "DIR")]
    janus_config: Option<PathBuf>,
    /// First lesson count of `capacity`.
    #[arg(long = "capacity-start", value_name = "N", default_value_t = 2)]
    cap_start: usize,
    /// Its step.
    #[arg(long = "capacity-step", value_name = "N", default_value_t = 2)]
    cap_step: usize,
    /// Its bound.
    #[arg(long = "capacity-max", value_name = "N", default_value_t = 24)]
    cap_max: usize,
    /// With `soak` only: start no new lesson after this many seconds.
    #[arg(long = "soak-secs", value_name = "SECS", default_value_t = 60)]
    soak_secs: u64,
    /// With `soak` only: how long each lesson runs before the teacher ends it.
    #[arg(long = "lesson-secs", value_name = "SECS", default_value_t = 20)]
    lesson_secs: u64,
    /// Write <scenario>-<target>.json there [default: do not write].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Show the server's log.
    #[arg(long)]
    server_log: bool,
}

/// The scenarios, by their names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1 teacher (audio, 1.2 Mbit/s camera, 1.5 Mbit/s screen) + 30 pupils
    /// (3 speaking, cameras off), N concurrent lessons
    #[value(name = "lesson31")]
    Lesson31,
    /// As lesson31, every pupil's camera on at 150 kbit/s
    #[value(name = "lesson31-cams")]
    Lesson31Cams,
    /// 31 participants join one lesson within a second; the teacher admits all
    #[value(name = "join-storm")]
    JoinStorm,
    /// The teacher mutes 30 talking pupils (who keep sending), in rounds
    #[value(name = "mute-all")]
    MuteAll,
    /// One lesson31 (teacher: mic and a three-layer simulcast camera), a
    /// third of the pupils behind relays capped at 2000/500/150 kbit/s for
    /// 25 s; then the same lesson with nobody capped
    #[value(name = "constrained")]
    Constrained,
    /// lesson31 with more lessons until loss > 0.1 % or p99 latency > 2 ms
    #[value(name = "capacity")]
    Capacity,
    /// Every scenario on Chaperone, lesson31 again with --recorder-process,
    /// then lesson31 and capacity on Janus
    #[value(name = "all")]
    All,
    /// lesson31 lessons one after another (pupils leave and reconnect, the
    /// teacher ends each): the gateway's memory, descriptors, tasks and
    /// lessons live over time, and whether it ends where it began
    #[value(name = "soak")]
    Soak,
    /// lesson31 on three gateway nodes (private Redis, a recorder): kill -9
    /// the lesson's owner mid-lesson; media back at every participant,
    /// joins refused, the recording's gap
    #[value(name = "failover")]
    Failover,
    /// As failover, but the owner is drained (SIGTERM), as a rolling deploy does
    #[value(name = "drain")]
    Drain,
    /// As failover, but the owner is paused (SIGSTOP) past its lease, the
    /// lesson taken over through another node, then resumed (SIGCONT):
    /// packets from the old owner after the takeover (must be none)
    #[value(name = "pause")]
    Pause,
    /// Medians (min, max) of every figure over the runs in DIR... (--out dirs)
    #[value(name = "median")]
    Median,
}

impl Scenario {
    /// The scenario [`Kind`] it runs, for the single-run scenarios.
    fn kind(self) -> Option<Kind> {
        match self {
            Scenario::Lesson31 => Some(Kind::Lesson31),
            Scenario::Lesson31Cams => Some(Kind::Lesson31Cams),
            Scenario::JoinStorm => Some(Kind::JoinStorm),
            Scenario::MuteAll => Some(Kind::MuteAll),
            Scenario::Capacity
            | Scenario::All
            | Scenario::Median
            | Scenario::Soak
            | Scenario::Failover
            | Scenario::Drain
            | Scenario::Pause
            | Scenario::Constrained => None,
        }
    }
}

/// The servers a run can be against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// The Chaperone gateway (`gateway --dev`)
    Chaperone,
    /// Janus's VideoRoom, for comparison
    Janus,
}

fn duration_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v <= 600.0 {
        Ok(v)
    } else {
        Err("must be in (0, 600] s".to_owned())
    }
}

fn warmup_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=60.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be in [0, 60] s".to_owned())
    }
}

/// Exit status 2 with a one-line message: what the command line got wrong
/// (clap's message up to its usage and tips, on one line) and where the
/// options are listed.
fn usage_error(message: &str) -> ExitCode {
    let head = message.split("\n\n").next().unwrap_or_default();
    let line = head.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("{line} (see `loadtest --help`)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version: printed to stdout, exit 0.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return usage_error(&e.to_string()),
    };
    match (args.scenario, args.dirs.is_empty()) {
        (Scenario::Median, true) => {
            return usage_error(
                "error: `median` needs the run directories: loadtest median DIR...",
            );
        }
        (Scenario::Median, false) => {}
        (_, false) => {
            return usage_error(&format!(
                "error: unexpected argument '{}' found: only `median` takes directories",
                args.dirs[0].display()
            ));
        }
        (_, true) => {}
    }
    let result = if args.scenario == Scenario::Median {
        median(&args.dirs)
    } else {
        run_scenarios(args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn run_scenarios(args: Args) -> Result<()> {
    // One thread for every simulated participant: the generator stays on
    // one core and leaves the other to the server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(args))
}

/// A workspace binary given on the command line, or the one next to this.
fn binary_or_default(given: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path.clone()),
        None => chaperone_testkit::process::binary(name),
    }
}

fn target(args: &Args, target: Target) -> Result<TargetKind> {
    Ok(match target {
        Target::Chaperone => TargetKind::Chaperone {
            bin: binary_or_default(&args.gateway, "gateway")?,
            recorder: if args.recorder_process {
                Some(binary_or_default(&args.recorder, "recorder")?)
            } else {
                None
            },
        },
        Target::Janus => TargetKind::Janus {
            bin: args.janus.clone(),
            config: args
                .janus_config
                .clone()
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("janus")),
        },
    })
}

fn options(args: &Args, kind: Option<Kind>) -> RunOptions {
    let default_lessons = match kind {
        Some(Kind::Lesson31 | Kind::Lesson31Cams) => 8,
        _ => 1,
    };
    RunOptions {
        lessons: args.lessons.unwrap_or(default_lessons),
        pupils: args.pupils,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        server_cpu: args.server_cpu,
        server_log: args.server_log,
    }
}

#[allow(clippy::print_stdout)]
fn emit(args: &Args, r: &ScenarioResult, suffix: &str) -> Result<()> {
    println!("{}", r.summary());
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}{suffix}-{}.json", r.scenario, r.target));
        std::fs::write(&path, serde_json::to_string_pretty(r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_capacity(args: &Args, t: &TargetKind) -> Result<()> {
    let opts = options(args, None);
    let (last, results) =
        scenario::capacity(t, &opts, args.cap_start, args.cap_step, args.cap_max).await?;
    for r in &results {
        emit(args, r, &format!("-capacity-{}", r.lessons))?;
    }
    println!(
        "capacity on {}: {} lesson31 lessons pass (loss <= 0.1 %, p99 <= 2 ms){}",
        t.name(),
        last.map_or("no".to_owned(), |n| n.to_string()),
        if last == Some(args.cap_max) {
            " (the bound; more may pass)"
        } else {
            ""
        }
    );
    if let Some(dir) = &args.out {
        let v = serde_json::json!({
            "scenario": "capacity", "target": t.name(), "last_passing_lessons": last,
            "bound": args.cap_max, "steps": results,
        });
        std::fs::write(
            dir.join(format!("capacity-{}.json", t.name())),
            serde_json::to_string_pretty(&v)?,
        )?;
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_soak(args: &Args) -> Result<()> {
    let opts = chaperone_loadtest::soak::SoakOptions {
        gateway: binary_or_default(&args.gateway, "gateway")?,
        duration: Duration::from_secs(args.soak_secs),
        lesson: Duration::from_secs(args.lesson_secs.max(5)),
        pupils: args.pupils,
        server_cpu: args.server_cpu,
        server_log: args.server_log,
    };
    let r = chaperone_loadtest::soak::run(&opts).await?;
    println!("{}", r.summary());
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("soak-chaperone.json");
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !r.holds {
        bail!(
            "the gateway did not end where it began: {}",
            r.leaks.join("; ")
        );
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_failover(args: &Args) -> Result<()> {
    let opts = chaperone_loadtest::failover::FailoverOptions {
        pupils: args.pupils,
        going: match args.scenario {
            Scenario::Drain => chaperone_loadtest::failover::Going::Drain,
            Scenario::Pause => chaperone_loadtest::failover::Going::Pause,
            _ => chaperone_loadtest::failover::Going::Kill,
        },
        settle: Duration::from_secs_f64(args.warmup.max(2.0)),
        bound: Duration::from_secs(60),
    };
    let r = chaperone_loadtest::failover::run(&opts).await?;
    println!("{}", r.summary());
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-chaperone.json", r.scenario));
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if r.not_back > 0
        || !r.recording_ok
        || r.revoked_mic_packets > 0
        || r.old_owner_packets_after_takeover > 0
    {
        bail!(
            "{} participants without media after the owner went; revoked microphone's packets received: {}; packets from the old owner after the takeover: {}; recording verifies: {}",
            r.not_back,
            r.revoked_mic_packets,
            r.old_owner_packets_after_takeover,
            r.recording_ok
        );
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_constrained(args: &Args, t: &TargetKind) -> Result<()> {
    if matches!(t, TargetKind::Janus { .. }) {
        bail!(
            "constrained runs against the gateway only (it reads the gateway's simulcast layers)"
        );
    }
    let r = chaperone_loadtest::constrained::run(t, &options(args, None)).await?;
    println!("{}", r.summary());
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("constrained-chaperone.json");
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    if matches!(
        args.scenario,
        Scenario::Failover | Scenario::Drain | Scenario::Pause
    ) {
        if args.target == Some(Target::Janus) {
            bail!("failover, drain and pause run against the gateway only");
        }
        return run_failover(&args).await;
    }
    if args.scenario == Scenario::Soak {
        if args.target == Some(Target::Janus) {
            bail!("soak runs against the gateway only");
        }
        return run_soak(&args).await;
    }
    let all = args.scenario == Scenario::All;
    let targets: Vec<Target> = match (args.target, all) {
        (Some(t), _) => vec![t],
        (None, true) => vec![Target::Chaperone, Target::Janus],
        (None, false) => vec![Target::Chaperone],
    };
    for tname in targets {
        let t = target(&args, tname)?;
        let scenarios: Vec<Scenario> = if all {
            match t {
                TargetKind::Chaperone { .. } => vec![
                    Scenario::Lesson31,
                    Scenario::Lesson31Cams,
                    Scenario::JoinStorm,
                    Scenario::MuteAll,
                    Scenario::Capacity,
                ],
                // The comparison the issue asks for: the same lesson31 and capacity load.
                TargetKind::Janus { .. } => vec![Scenario::Lesson31, Scenario::Capacity],
            }
        } else {
            vec![args.scenario]
        };
        for s in scenarios {
            if s == Scenario::Capacity {
                run_capacity(&args, &t).await?;
                continue;
            }
            if s == Scenario::Constrained {
                run_constrained(&args, &t).await?;
                continue;
            }
            let kind = s
                .kind()
                .context("all and median are not single scenarios")?;
            if matches!(t, TargetKind::Janus { .. })
                && matches!(kind, Kind::JoinStorm | Kind::MuteAll)
            {
                bail!(
                    "{} needs the gateway's waiting room and controls; Janus has neither",
                    kind.name()
                );
            }
            let r = scenario::run(kind, &t, &options(&args, Some(kind))).await?;
            emit(&args, &r, "")?;
        }
        // What recording costs: lesson31 again, the recorder in a process of its own.
        if let (
            true,
            TargetKind::Chaperone {
                bin,
                recorder: None,
            },
        ) = (all, &t)
        {
            let t = TargetKind::Chaperone {
                bin: bin.clone(),
                recorder: Some(binary_or_default(&args.recorder, "recorder")?),
            };
            let kind = Kind::Lesson31;
            let r = scenario::run(kind, &t, &options(&args, Some(kind))).await?;
            emit(&args, &r, "-recorder-process")?;
        }
    }
    Ok(())
}

/// Every numeric leaf of a JSON value, by dotted path.
fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((prefix.to_owned(), f));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        _ => {}
    }
}

/// `loadtest median DIR...`: for each result file name found in the run
/// directories, the median (and range) of every figure across them.
#[allow(clippy::print_stdout)]
fn median(dirs: &[PathBuf]) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for d in dirs {
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                names.insert(name);
            }
        }
    }
    for name in names {
        let mut by_key: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let mut runs = 0;
        for d in dirs {
            let Ok(text) = std::fs::read_to_string(d.join(&name)) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let mut l = Vec::new();
            leaves("", &v, &mut l);
            for (k, f) in l {
                by_key.entry(k).or_default().push(f);
            }
            runs += 1;
        }
        println!(
            "\n### {name} ({runs} runs)\n\n| figure | median | min | max |\n|---|---|---|---|"
        );
        for (k, mut v) in by_key {
            v.sort_by(f64::total_cmp);
            let med = if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            };
            println!("| {k} | {med:.3} | {:.3} | {:.3} |", v[0], v[v.len() - 1]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_is_named_on_the_command_line_as_in_its_results() {
        for s in Scenario::value_variants() {
            if let Some(kind) = s.kind() {
                let value = s.to_possible_value().expect("no variant is skipped");
                assert_eq!(value.get_name(), kind.name());
            }
        }
    }

    #[test]
    fn the_defaults_are_those_of_the_hand_written_parser() {
        let a = Args::try_parse_from(["loadtest", "lesson31"]).expect("parses");
        assert_eq!(a.scenario, Scenario::Lesson31);
        assert_eq!((a.target, a.lessons, a.pupils), (None, None, 30));
        assert_eq!((a.duration, a.warmup, a.server_cpu), (10.0, 2.0, None));
        assert_eq!((a.cap_start, a.cap_step, a.cap_max), (2, 2, 24));
        assert_eq!(a.janus, PathBuf::from("/usr/bin/janus"));
        assert!(!a.recorder_process && !a.server_log);
        assert!(a.gateway.is_none() && a.recorder.is_none() && a.out.is_none());
        assert_eq!(options(&a, Some(Kind::Lesson31)).lessons, 8);
        assert_eq!(options(&a, Some(Kind::Lesson31Cams)).lessons, 8);
        assert_eq!(options(&a, Some(Kind::JoinStorm)).lessons, 1);
        assert_eq!(options(&a, None).lessons, 1);
    }

    #[test]
    fn the_smoke_test_and_bench_command_lines_parse() {
        let a = Args::try_parse_from([
            "loadtest",
            "lesson31",
            "--lessons",
            "1",
            "--pupils",
            "5",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--out",
            "/tmp/x",
            "--gateway",
            "/g",
            "--recorder",
            "/r",
            "--recorder-process",
        ])
        .expect("parses");
        assert_eq!(
            (a.lessons, a.pupils, a.duration, a.warmup),
            (Some(1), 5, 3.0, 1.0)
        );
        assert!(a.recorder_process);
        let a = Args::try_parse_from([
            "loadtest",
            "all",
            "--target",
            "janus",
            "--server-cpu",
            "0",
            "--capacity-start",
            "4",
            "--capacity-step",
            "3",
            "--capacity-max",
            "10",
            "--janus",
            "/j",
            "--janus-config",
            "/c",
            "--server-log",
            "--out",
            "run-1",
        ])
        .expect("parses");
        assert_eq!((a.scenario, a.target), (Scenario::All, Some(Target::Janus)));
        assert_eq!(
            (a.server_cpu, a.cap_start, a.cap_step, a.cap_max),
            (Some(0), 4, 3, 10)
        );
        assert!(a.server_log);
        let a = Args::try_parse_from(["loadtest", "median", "run-1/", "run-2/"]).expect("parses");
        assert_eq!(a.dirs, [PathBuf::from("run-1/"), PathBuf::from("run-2/")]);
    }
}
