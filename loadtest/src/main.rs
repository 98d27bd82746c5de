//! `loadtest`: runs Chaperone's benchmark scenarios against the gateway
//! (and, for comparison, Janus) and writes a JSON result and a summary for
//! each. See `loadtest --help`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chaperone_loadtest::report::ScenarioResult;
use chaperone_loadtest::scenario::{self, Kind, RunOptions, TargetKind};

const HELP: &str = "\
usage: loadtest <scenario> [options]

scenarios:
  lesson31        1 teacher (audio, 1.2 Mbit/s camera, 1.5 Mbit/s screen) + 30 pupils
                  (3 speaking, cameras off), N concurrent lessons
  lesson31-cams   as lesson31, every pupil's camera on at 150 kbit/s
  join-storm      31 participants join one lesson within a second; the teacher admits all
  mute-all        the teacher mutes 30 talking pupils (who keep sending), in rounds
  capacity        lesson31 with more lessons until loss > 0.1 % or p99 latency > 2 ms
  all             every scenario on Chaperone, lesson31 again with --recorder-process,
                  then lesson31 and capacity on Janus
  median DIR...   medians (min, max) of every figure over the runs in DIR... (--out dirs)

options:
  --target chaperone|janus   server under test (default chaperone; `all` runs both)
  --lessons N                concurrent lessons (default: 8 for lesson31*, 1 otherwise)
  --pupils N                 pupils per lesson (default 30; fewer only for smoke runs)
  --duration SECS            measurement window (default 10)
  --warmup SECS              settling time before the window (default 2)
  --server-cpu N             pin the server to CPU N with taskset
  --gateway PATH             gateway binary (default: next to this one)
  --recorder-process         record with a `recorder serve` process of its own (on the
                             server's CPU) instead of the gateway's embedded recorder,
                             and report its CPU per lesson
  --recorder PATH            recorder binary (default: next to this one)
  --janus PATH               janus binary (default /usr/bin/janus)
  --janus-config DIR         Janus configuration (default: loadtest/janus of this source tree)
  --capacity-start N         first lesson count of `capacity` (default 2)
  --capacity-step N          its step (default 2)
  --capacity-max N           its bound (default 24)
  --out DIR                  write <scenario>-<target>.json there (default: do not write)
  --server-log               show the server's log
";

#[derive(Debug)]
struct Args {
    scenario: String,
    target: Option<String>,
    lessons: Option<usize>,
    pupils: usize,
    duration: f64,
    warmup: f64,
    server_cpu: Option<usize>,
    gateway: PathBuf,
    recorder_process: bool,
    recorder: PathBuf,
    janus: PathBuf,
    janus_config: PathBuf,
    cap_start: usize,
    cap_step: usize,
    cap_max: usize,
    out: Option<PathBuf>,
    server_log: bool,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        scenario: String::new(),
        target: None,
        lessons: None,
        pupils: scenario::PUPILS,
        duration: 10.0,
        warmup: 2.0,
        server_cpu: None,
        gateway: chaperone_testkit::process::binary("gateway").unwrap_or_else(|_| "gateway".into()),
        recorder_process: false,
        recorder: chaperone_testkit::process::binary("recorder")
            .unwrap_or_else(|_| "recorder".into()),
        janus: PathBuf::from("/usr/bin/janus"),
        janus_config: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("janus"),
        cap_start: 2,
        cap_step: 2,
        cap_max: 24,
        out: None,
        server_log: false,
    };
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                eprint!("{HELP}");
                std::process::exit(0);
            }
            "--target" => a.target = Some(val()?),
            "--lessons" => a.lessons = Some(val()?.parse()?),
            "--pupils" => a.pupils = val()?.parse()?,
            "--duration" => a.duration = val()?.parse()?,
            "--warmup" => a.warmup = val()?.parse()?,
            "--server-cpu" => a.server_cpu = Some(val()?.parse()?),
            "--gateway" => a.gateway = val()?.into(),
            "--recorder-process" => a.recorder_process = true,
            "--recorder" => a.recorder = val()?.into(),
            "--janus" => a.janus = val()?.into(),
            "--janus-config" => a.janus_config = val()?.into(),
            "--capacity-start" => a.cap_start = val()?.parse()?,
            "--capacity-step" => a.cap_step = val()?.parse()?,
            "--capacity-max" => a.cap_max = val()?.parse()?,
            "--out" => a.out = Some(val()?.into()),
            "--server-log" => a.server_log = true,
            s if s.starts_with('-') => bail!("unknown option {s}\n{HELP}"),
            s if a.scenario.is_empty() => a.scenario = s.to_owned(),
            s => bail!("unexpected argument {s}\n{HELP}"),
        }
    }
    if a.scenario.is_empty() {
        bail!("no scenario given\n{HELP}");
    }
    if !(a.duration > 0.0 && a.duration <= 600.0 && (0.0..=60.0).contains(&a.warmup)) {
        bail!("--duration must be in (0, 600] s and --warmup in [0, 60] s");
    }
    Ok(a)
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("median") {
        return median(std::env::args().skip(2).map(PathBuf::from).collect());
    }
    let args = parse_args()?;
    // One thread for every simulated participant: the generator stays on
    // one core and leaves the other to the server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(args))
}

fn target(args: &Args, name: &str) -> Result<TargetKind> {
    Ok(match name {
        "chaperone" => TargetKind::Chaperone {
            bin: args.gateway.clone(),
            recorder: args.recorder_process.then(|| args.recorder.clone()),
        },
        "janus" => TargetKind::Janus {
            bin: args.janus.clone(),
            config: args.janus_config.clone(),
        },
        other => bail!("unknown target {other}"),
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

async fn run(args: Args) -> Result<()> {
    let all = args.scenario == "all";
    let targets: Vec<String> = match (&args.target, all) {
        (Some(t), _) => vec![t.clone()],
        (None, true) => vec!["chaperone".into(), "janus".into()],
        (None, false) => vec!["chaperone".into()],
    };
    for tname in &targets {
        let t = target(&args, tname)?;
        let kinds: Vec<&str> = if all {
            match t {
                TargetKind::Chaperone { .. } => {
                    vec![
                        "lesson31",
                        "lesson31-cams",
                        "join-storm",
                        "mute-all",
                        "capacity",
                    ]
                }
                // The comparison the issue asks for: the same lesson31 and capacity load.
                TargetKind::Janus { .. } => vec!["lesson31", "capacity"],
            }
        } else {
            vec![args.scenario.as_str()]
        };
        for k in kinds {
            if k == "capacity" {
                run_capacity(&args, &t).await?;
                continue;
            }
            let kind = Kind::parse(k).with_context(|| format!("unknown scenario {k}\n{HELP}"))?;
            if matches!(t, TargetKind::Janus { .. })
                && matches!(kind, Kind::JoinStorm | Kind::MuteAll)
            {
                bail!("{k} needs the gateway's waiting room and controls; Janus has neither");
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
                recorder: Some(args.recorder.clone()),
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
fn median(dirs: Vec<PathBuf>) -> Result<()> {
    if dirs.is_empty() {
        bail!("usage: loadtest median DIR...");
    }
    let mut names = std::collections::BTreeSet::new();
    for d in &dirs {
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
        for d in &dirs {
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
