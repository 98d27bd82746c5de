//! The deployment files in `deploy/` are true, checked without a container
//! engine (there is none here): the dashboards and alert rules are valid
//! and use only metrics a running gateway exports (a live scrape of the
//! real binary), the rules pass `promtool` (syntax and unit tests), the
//! reference configuration loads through the gateway's own `Config` and
//! documents every key, and the compose file and Kubernetes manifests parse
//! and agree with each other and with the configuration they mount: images
//! built by a Dockerfile, ports, secrets, every `CHAPERONE_*` variable.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chaperone_gateway::config::Config;
use chaperone_testkit::gateway::{Gateway, http_get};
use chaperone_testkit::process::binary;
use chaperone_testkit::recorder::Recorder;
use serde::Deserialize;
use serde_json::Value;

/// Metrics the dashboards and rules use that no binary on this branch
/// exports yet: provided by the recorder feed and the recorder service
/// (lead, issue 5). Remove each name here when it is exported; the test
/// fails for a name that is listed but already exported, or no longer used.
/// Series that come from Prometheus itself and the blackbox exporter, not
/// from our binaries: `up` (the scrape answered) and `probe_success` (the
/// exporter's GET of `/readyz` answered 2xx), the two availability signals
/// the rules alert on.
const EXTERNAL_METRICS: &[&str] = &["up", "probe_success"];

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} holds one document", path.display());
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// Identifiers in a PromQL expression that name our series or the two
/// external ones (label names, functions and keywords are neither).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut in_quotes = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("chaperone_") || EXTERNAL_METRICS.contains(&word.as_str()) {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// `job="..."` selectors in an expression.
fn jobs(expr: &str) -> BTreeSet<String> {
    expr.match_indices("job=\"")
        .filter_map(|(i, m)| {
            let rest = &expr[i + m.len()..];
            rest.split('"').next().map(str::to_owned)
        })
        .collect()
}

/// The series names a scrape exposes (histograms as their `_bucket`,
/// `_sum` and `_count` series).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every expression of the dashboards, with where it is.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = deploy("grafana/dashboards");
    let provisioned = yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"));
    let ds_uid = str_of(&provisioned["datasources"][0]["uid"], "datasource uid").to_owned();
    let mut titles = BTreeSet::new();
    let mut uids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let d: Value = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let title = str_of(&d["title"], "title").to_owned();
        assert!(
            uids.insert(str_of(&d["uid"], "uid").to_owned()),
            "duplicate uid"
        );
        titles.insert(title.clone());
        for v in d["templating"]["list"].as_array().unwrap() {
            out.push((
                format!("{title} / ${}", str_of(&v["name"], "variable")),
                str_of(&v["query"]["query"], "variable query").to_owned(),
            ));
        }
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() > 3, "{title} has panels");
        for p in panels {
            let grid = &p["gridPos"];
            for k in ["h", "w", "x", "y"] {
                assert!(grid[k].is_u64(), "{title}: panel without gridPos.{k}");
            }
            if p["type"] == "row" {
                continue;
            }
            let ptitle = str_of(&p["title"], "panel title");
            assert_eq!(p["datasource"]["uid"], ds_uid.as_str(), "{ptitle}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title} / {ptitle} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], ds_uid.as_str(), "{ptitle}");
                out.push((
                    format!("{title} / {ptitle}"),
                    str_of(&t["expr"], "expr").to_owned(),
                ));
            }
        }
    }
    for want in ["Lesson quality", "Safeguarding", "Recorder"] {
        assert!(
            titles.iter().any(|t| t.ends_with(want)),
            "no \"{want}\" dashboard in {titles:?}"
        );
    }
    out
}

/// Every alert expression, by alert name.
fn rule_exprs() -> Vec<(String, String)> {
    let rules = yaml(&deploy("prometheus/rules/chaperone.yml"));
    let mut out = Vec::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = str_of(&r["alert"], "alert").to_owned();
            assert!(r["labels"]["severity"].is_string(), "{name} has a severity");
            assert!(
                r["annotations"]["summary"].is_string(),
                "{name} has a summary"
            );
            out.push((name, str_of(&r["expr"], "expr").to_owned()));
        }
    }
    out
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboards_and_rules_use_only_metrics_a_live_gateway_exports() {
    let gw = Gateway::start_dev(&[]).unwrap();
    // The metrics listener opens just after the HTTP one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, scrape) = loop {
        match http_get(gw.metrics_port(), "/metrics") {
            Ok(answer) => break answer,
            Err(e) if std::time::Instant::now() > deadline => panic!("no /metrics: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert_eq!(status, 200);
    let mut names = exported(&scrape);
    assert!(names.contains("chaperone_join_seconds_bucket"), "{scrape}");
    // The recorder service's own metrics (with a spool, as deployed).
    let rec = Recorder::start(&gw.base_url(), &[]).unwrap();
    let (status, scrape) = http_get(rec.metrics_port(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let from_recorder = exported(&scrape);
    assert!(
        from_recorder.contains("chaperone_recorder_store_up"),
        "{scrape}"
    );
    names.extend(from_recorder);
    let exported = names;

    let mut used = BTreeSet::new();
    let mut used_jobs = BTreeSet::new();
    let exprs: Vec<_> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    for (where_, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{where_}: no metric in {expr}");
        for n in names {
            assert!(
                exported.contains(&n) || EXTERNAL_METRICS.contains(&n.as_str()),
                "{where_}: {n} is exported by neither the gateway nor the recorder (nor external)"
            );
            used.insert(n);
        }
        used_jobs.extend(jobs(expr));
    }
    // The figures the lesson-quality dashboard is for.
    let lesson_quality: String = exprs
        .iter()
        .filter(|(w, _)| w.contains("Lesson quality"))
        .map(|(_, e)| e.as_str())
        .collect();
    for figure in [
        "chaperone_join_seconds_bucket",
        "chaperone_forwarding_latency_seconds_bucket",
        "chaperone_media_loss_ratio_bucket",
        "chaperone_media_jitter_seconds_bucket",
        "chaperone_media_rtt_seconds_bucket",
        "chaperone_control_enforcement_seconds_bucket",
    ] {
        assert!(
            lesson_quality.contains(figure),
            "Lesson quality lacks {figure}"
        );
    }
    for q in ["0.5", "0.95", "0.99"] {
        assert!(lesson_quality.contains(&format!(
            "histogram_quantile({q}, sum by (le) (rate(chaperone_join_seconds_bucket"
        )));
    }

    // Jobs the rules name are the jobs Prometheus scrapes.
    let prom = yaml(&deploy("prometheus/prometheus.yml"));
    let scraped: BTreeSet<String> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| str_of(&j["job_name"], "job_name").to_owned())
        .collect();
    assert!(
        used_jobs.is_subset(&scraped),
        "{used_jobs:?} vs {scraped:?}"
    );

    // Real Prometheus tooling: the rules parse, their unit tests pass, the
    // scrape configuration is valid.
    promtool(
        &["check", "rules", "chaperone.yml"],
        &deploy("prometheus/rules"),
    );
    promtool(
        &["test", "rules", "chaperone.test.yml"],
        &deploy("prometheus/rules"),
    );
    promtool(
        &["check", "config", "prometheus.yml"],
        &deploy("prometheus"),
    );
}

/// Dotted keys of a TOML table (`oidc.claims.roles.pupils`).
fn toml_keys(t: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in t {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(inner) => toml_keys(inner, &format!("{key}."), out),
            _ => {
                out.insert(key);
            }
        }
    }
}

fn toml_value<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

#[test]
fn the_reference_configuration_loads_and_comments_every_key() {
    let path = deploy("chaperone.toml");
    let config = Config::from_file(path.to_str().unwrap()).unwrap();
    config.validate().unwrap_or_else(|e| {
        panic!("deploy/chaperone.toml is not a valid production configuration: {e}")
    });
    let text = read(&path);
    let mut documented = BTreeSet::new();
    toml_keys(&toml::from_str(&text).unwrap(), "", &mut documented);
    let mut all = BTreeSet::new();
    toml_keys(
        &toml::from_str(&Config::default().to_toml()).unwrap(),
        "",
        &mut all,
    );
    // The claim-to-role table is free-form; every fixed key must be there.
    let missing: Vec<_> = all
        .iter()
        .filter(|k| !k.starts_with("oidc.claims.roles.") && !documented.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/chaperone.toml lacks {missing:?}"
    );
    // Every key line has a comment in its paragraph.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with('#') || line.starts_with('[') || !line.contains(" = ") {
            continue;
        }
        let commented = lines[..i]
            .iter()
            .rev()
            .take_while(|l| !l.trim().is_empty() && !l.starts_with('['))
            .any(|l| l.starts_with('#'));
        assert!(commented, "deploy/chaperone.toml: no comment for {line:?}");
    }
    // And the binary itself takes it.
    let out = Command::new(binary("gateway").unwrap())
        .args(["--config", path.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gateway --config deploy/chaperone.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies `CHAPERONE_*` variables the way the gateway does, checking each
/// one names a real key and takes its value.
fn apply_env(config: &mut Config, env: &BTreeMap<String, String>) {
    for (var, value) in env {
        let Some(key) = var.strip_prefix("CHAPERONE_") else {
            continue;
        };
        config
            .apply_env([(var.clone(), value.clone())])
            .unwrap_or_else(|e| panic!("{var}: {e}"));
        let table: toml::Table = toml::from_str(&config.to_toml()).unwrap();
        let dotted = table
            .iter()
            .find_map(|(section, v)| {
                let rest = key.strip_prefix(&format!("{}_", section.to_uppercase()))?;
                let k = rest.to_lowercase();
                v.as_table()?
                    .contains_key(&k)
                    .then(|| format!("{section}.{k}"))
            })
            .unwrap_or_else(|| panic!("{var} names no configuration key"));
        let got = match toml_value(&table, &dotted).unwrap() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let want: String = value
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(got, want, "{var} did not set {dotted}");
    }
}

fn env_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let s = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The word after `name` in `words`.
fn flag_of<'a>(words: &[&'a str], name: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == name)
        .and_then(|i| words.get(i + 1).copied())
}

/// The value of `--flag=value` or `--flag value` in a command.
fn flag<'a>(cmd: &'a [String], name: &str) -> Option<&'a str> {
    cmd.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            Some(v)
        } else if a == name {
            cmd.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

fn command(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(|s| str_of(s, "command").to_owned()).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The subcommands `recorder` has: the "Commands:" section of its `--help`.
fn recorder_subcommands() -> BTreeSet<String> {
    let out = Command::new(binary("recorder").unwrap())
        .arg("--help")
        .output()
        .unwrap();
    let usage = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: BTreeSet<String> = usage
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|w| w != "help")
        .collect();
    assert!(words.contains("verify"), "recorder usage: {usage}");
    words
}

fn check_subcommand(what: &str, sub: &str, have: &BTreeSet<String>) {
    assert!(
        have.contains(sub),
        "{what} runs `recorder {sub}`, which does not exist"
    );
}

/// Third-party images are pinned to a version; ours are built here.
fn check_image(what: &str, image: &str) {
    let (_, tag) = image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{what}: image {image} has no tag"));
    assert!(
        tag != "latest" && !tag.is_empty(),
        "{what}: image {image} is not pinned"
    );
}

/// A Dockerfile builds the binary in one stage and ships it in another.
fn check_dockerfile(path: &Path, bin: &str) {
    let text = read(path);
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "{} is not multi-stage", path.display());
    assert!(
        text.contains(&format!("--locked -p chaperone-{bin} --bin {bin}")),
        "{} does not build {bin}",
        path.display()
    );
    assert!(text.contains("COPY --from=build"), "{}", path.display());
    assert!(
        text.contains("USER nonroot"),
        "{} runs as root",
        path.display()
    );
    for f in froms {
        check_image(
            &path.display().to_string(),
            f.split_whitespace().nth(1).unwrap(),
        );
    }
    // The binary exists in the workspace under that name.
    let manifest = read(&deploy(&format!("../{bin}/Cargo.toml")));
    assert!(
        manifest.contains(&format!("name = \"{bin}\"")),
        "no [[bin]] {bin}"
    );
}

#[test]
fn the_compose_file_agrees_with_what_it_runs() {
    let dir = deploy("compose");
    let compose = yaml(&dir.join("compose.yaml"));
    let services = compose["services"].as_object().unwrap();
    for want in [
        "gateway-1",
        "gateway-2",
        "recorder",
        "review",
        "redis",
        "garage",
        "idp",
        "coturn",
        "prometheus",
        "blackbox",
        "grafana",
    ] {
        assert!(services.contains_key(want), "compose has no {want}");
    }
    let mut built = BTreeMap::new();
    for (name, s) in services {
        let image = str_of(&s["image"], "image");
        check_image(name, image);
        assert_eq!(s["network_mode"], "host", "{name}: see the file's header");
        if let Some(b) = s.get("build") {
            let context = dir.join(str_of(&b["context"], "context"));
            let dockerfile = context.join(str_of(&b["dockerfile"], "dockerfile"));
            assert!(dockerfile.exists(), "{name}: {}", dockerfile.display());
            built.insert(image.to_owned(), dockerfile);
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = str_of(v, "volume");
            let source = v.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(dir.join(source).exists(), "{name}: mounts missing {source}");
            } else {
                assert!(
                    compose["volumes"].get(source).is_some(),
                    "{name}: undeclared volume {source}"
                );
            }
        }
        for secret in s["secrets"].as_array().into_iter().flatten() {
            let secret = str_of(secret, "secret");
            let file = str_of(&compose["secrets"][secret]["file"], "secret file");
            let file = dir.join(file);
            let readme = read(&file.parent().unwrap().join("README.md"));
            assert!(
                readme.contains(file.file_name().unwrap().to_str().unwrap()),
                "{name}: how to make {} is not documented",
                file.display()
            );
        }
    }
    check_dockerfile(&built["chaperone/gateway-dev:0.1.0"], "gateway");
    // The production image is built without development mode; a service
    // that runs `--dev` must be built with it.
    let gateway_dockerfile = read(&built["chaperone/gateway-dev:0.1.0"]);
    assert!(
        gateway_dockerfile.contains("ARG FEATURES=\"\"")
            && gateway_dockerfile.contains("--features \"${FEATURES}\""),
        "the gateway image must default to no cargo features"
    );
    for (name, s) in services {
        if command(&s["command"]).iter().any(|a| a == "--dev") {
            let image = &s["image"];
            let builder = services
                .values()
                .find(|b| b["image"] == *image && b.get("build").is_some())
                .unwrap_or_else(|| panic!("{name}: nothing builds {image}"));
            assert_eq!(
                builder["build"]["args"]["FEATURES"], "dev",
                "{name} runs --dev: its image needs the dev feature"
            );
        }
    }
    check_dockerfile(&built["chaperone/recorder:0.1.0"], "recorder");
    for (name, s) in services {
        let image = str_of(&s["image"], "image");
        if image.starts_with("chaperone/") {
            assert!(built.contains_key(image), "{name}: nothing builds {image}");
        }
    }

    // The gateways: their configuration as the binary builds it.
    let mounted = |s: &Value, target: &str| -> PathBuf {
        s["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| str_of(v, "volume"))
            .find_map(|v| {
                let mut parts = v.split(':');
                let (src, dst) = (parts.next()?, parts.next()?);
                (dst == target).then(|| dir.join(src))
            })
            .unwrap_or_else(|| panic!("nothing mounted at {target}"))
    };
    let prom = yaml(&deploy("prometheus/prometheus.yml"));
    let job_targets = |job: &str| -> BTreeSet<String> {
        prom["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["job_name"] == job)
            .flat_map(|j| {
                j["static_configs"][0]["targets"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|t| str_of(&t, "target").to_owned())
            .collect()
    };
    let redis_port = flag(&command(&services["redis"]["command"]), "--port")
        .unwrap()
        .to_owned();
    let idp_cmd = command(&services["idp"]["command"]).join(" ");
    assert!(
        idp_cmd.contains("provider.mjs /etc/idp/config.json"),
        "{idp_cmd}"
    );
    assert!(deploy("../tests/idp/provider.mjs").exists());
    let idp: Value =
        serde_json::from_str(&read(&mounted(&services["idp"], "/etc/idp/config.json"))).unwrap();
    let coturn = command(&services["coturn"]["command"]);
    let (mut metrics, mut http, mut listens) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (name, s) in services
        .iter()
        .filter(|(_, s)| s["image"] == "chaperone/gateway-dev:0.1.0")
    {
        let cmd = command(&s["command"]);
        let file = flag(&cmd, "--config").unwrap();
        let mut config = Config::from_file(mounted(s, file).to_str().unwrap()).unwrap();
        config.dev = cmd.iter().any(|a| a == "--dev");
        apply_env(&mut config, &env_map(&s["environment"]));
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let listen = config.http.listen.to_string();
        for addr in [
            listen.clone(),
            config.media.udp_listen.to_string(),
            config.metrics.listen.clone(),
        ] {
            assert!(
                listens.insert(addr.clone()),
                "{name}: {addr} is taken twice"
            );
        }
        metrics.insert(config.metrics.listen.clone());
        http.insert(format!("http://{listen}/readyz"));
        assert_eq!(
            port_of(&config.store.redis_url).to_string(),
            redis_port,
            "{name}"
        );
        // The test provider knows this gateway as its client.
        assert_eq!(config.oidc.issuer, str_of(&idp["issuer"], "issuer"));
        assert_eq!(
            port_of(&config.oidc.issuer),
            idp["port"].as_u64().unwrap() as u16
        );
        let client = &idp["clients"][0];
        assert_eq!(client["client_id"], config.oidc.client_id.as_str());
        assert_eq!(client["client_secret"], config.oidc.client_secret.as_str());
        let callback = format!("http://{listen}/auth/callback");
        assert!(
            client["redirect_uris"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| *u == callback.as_str()),
            "{name}: the provider does not allow {callback}"
        );
        let groups: BTreeSet<&str> = idp["users"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| {
                u["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_str().unwrap())
            })
            .collect();
        for g in groups {
            assert!(
                config.oidc.claims.roles.contains_key(g),
                "{name}: group {g} has no role"
            );
        }
        // TURN: the same secret and port as coturn.
        assert_eq!(
            flag(&coturn, "--static-auth-secret"),
            Some(config.turn.shared_secret.as_str())
        );
        let port = flag(&coturn, "--listening-port").unwrap();
        assert!(
            config
                .turn
                .urls
                .iter()
                .all(|u| u.contains(&format!(":{port}")))
        );
        // The signing key is a compose secret of this service.
        let key = config
            .tokens
            .signing_key_file
            .strip_prefix("/run/secrets/")
            .unwrap();
        assert!(s["secrets"].as_array().unwrap().iter().any(|v| v == key));
    }
    assert_eq!(metrics, job_targets("chaperone-gateway"));
    assert_eq!(http, job_targets("chaperone-readyz"));

    // Prometheus, the blackbox exporter and Grafana find one another.
    let prom_cmd = command(&services["prometheus"]["command"]);
    let prom_dir = mounted(&services["prometheus"], "/etc/prometheus");
    let config_file = flag(&prom_cmd, "--config.file").unwrap();
    assert!(
        prom_dir
            .join(config_file.strip_prefix("/etc/prometheus/").unwrap())
            .exists()
    );
    let listen = flag(&prom_cmd, "--web.listen-address").unwrap();
    let ds = yaml(
        &mounted(&services["grafana"], "/etc/grafana/provisioning")
            .join("datasources/prometheus.yaml"),
    );
    assert_eq!(
        ds["datasources"][0]["url"],
        format!("http://{listen}").as_str()
    );
    let providers = yaml(&deploy("grafana/provisioning/dashboards/chaperone.yaml"));
    let path = str_of(&providers["providers"][0]["options"]["path"], "path");
    assert!(
        mounted(&services["grafana"], path)
            .join("lesson-quality.json")
            .exists()
    );
    let bb = command(&services["blackbox"]["command"]);
    let bb_listen = flag(&bb, "--web.listen-address").unwrap();
    let readyz = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "chaperone-readyz")
        .unwrap();
    assert!(readyz["relabel_configs"].to_string().contains(bb_listen));
    let module = str_of(&readyz["params"]["module"][0], "module");
    let bb_config = yaml(&mounted(
        &services["blackbox"],
        flag(&bb, "--config.file").unwrap(),
    ));
    assert!(
        bb_config["modules"][module].is_object(),
        "no blackbox module {module}"
    );
    assert!(
        job_targets("chaperone-recorder")
            .iter()
            .all(|t| t.starts_with("127.0.0.1:"))
    );

    // The recorder and review services run subcommands of `recorder`.
    let have = recorder_subcommands();
    for (name, config_flag) in [("recorder", "--config"), ("review", "--store-config")] {
        let cmd = command(&services[name]["command"]);
        check_subcommand(name, &cmd[0], &have);
        let file = flag(&cmd, config_flag).unwrap_or_else(|| panic!("{name}: no {config_flag}"));
        let path = mounted(&services[name], file);
        assert!(path.exists(), "{name}: {} missing", path.display());
        check_recorder_config(name, &read(&path), &BTreeMap::new());
    }
}

/// A recorder service file (`recorder serve --config`) or a review store
/// file (`recorder review --store-config`) loads with every key known.
/// `env` is what the deployment adds from Secrets.
fn check_recorder_config(what: &str, text: &str, env: &BTreeMap<String, String>) {
    if text.contains("[archive]") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recorder.toml");
        std::fs::write(&path, text).unwrap();
        let vars = env.iter().map(|(k, v)| (k.clone(), v.clone()));
        chaperone_recorder::service::config::ServiceConfig::load(Some(&path), vars)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    } else {
        let mut c: chaperone_archive::store::StoreConfig =
            toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
        for (k, v) in env {
            if let Some(key) = k.strip_prefix("CHAPERONE_REVIEW_STORE_") {
                assert!(
                    c.apply_env(key, v.clone()).unwrap(),
                    "{what}: {k} is no key"
                );
            }
        }
        c.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// Kubernetes objects by (kind, name).
fn manifests() -> BTreeMap<(String, String), Value> {
    let dir = deploy("kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let mut listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "resource").to_owned())
        .collect();
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if file == "kustomization.yaml" || !file.ends_with(".yaml") {
            continue;
        }
        assert!(listed.remove(&file), "{file} is not in kustomization.yaml");
        for doc in yaml_docs(&path) {
            assert!(doc["apiVersion"].is_string(), "{file}: no apiVersion");
            let kind = str_of(&doc["kind"], "kind").to_owned();
            let name = str_of(&doc["metadata"]["name"], "name").to_owned();
            if kind != "Namespace" {
                assert_eq!(
                    doc["metadata"]["namespace"], "chaperone",
                    "{file}: {kind} {name}"
                );
            }
            assert!(out.insert((kind, name), doc).is_none(), "{file}: duplicate");
        }
    }
    assert!(
        listed.is_empty(),
        "kustomization.yaml lists missing {listed:?}"
    );
    out
}

#[test]
fn the_kubernetes_manifests_agree_with_what_they_run() {
    let k = manifests();
    let get = |kind: &str, name: &str| -> &Value {
        k.get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    // The images deploy/README.md says how to build (`docker build -f
    // <Dockerfile> -t <image> .`), each from a Dockerfile that exists.
    let readme = read(&deploy("README.md"));
    let built: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("docker build "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let dockerfile = flag_of(&words, "-f").expect("docker build -f <file>");
            assert!(
                deploy(&format!("../{dockerfile}")).exists(),
                "deploy/README.md builds from a missing {dockerfile}"
            );
            flag_of(&words, "-t")
                .expect("docker build -t <image>")
                .to_owned()
        })
        .collect();
    assert!(built.len() >= 2, "deploy/README.md names no image builds");
    let have = recorder_subcommands();
    let secrets: BTreeMap<&str, BTreeMap<String, String>> = k
        .iter()
        .filter(|((kind, _), _)| kind == "Secret")
        .map(|((_, name), s)| (name.as_str(), env_map(&s["stringData"])))
        .collect();

    for ((kind, name), d) in &k {
        if !matches!(kind.as_str(), "Deployment" | "StatefulSet") {
            continue;
        }
        let pod = &d["spec"]["template"];
        let labels = &pod["metadata"]["labels"];
        for (l, v) in d["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[l], v, "{name}: selector does not match its pods");
        }
        let c = &pod["spec"]["containers"][0];
        let image = str_of(&c["image"], "image");
        assert!(
            built.contains(image),
            "{name}: {image} is built by no Dockerfile"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"], true,
            "{name}"
        );
        // Every mount is a declared volume; ConfigMap subPaths are keys of it.
        let volumes: Vec<&Value> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .chain(
                d["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["metadata"]),
            )
            .collect();
        for m in c["volumeMounts"].as_array().unwrap() {
            let v = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("{name}: undeclared volume {}", m["name"]));
            if let (Some(cm), Some(key)) = (v["configMap"]["name"].as_str(), m["subPath"].as_str())
            {
                assert!(
                    get("ConfigMap", cm)["data"][key].is_string(),
                    "{name}: {cm} has no {key}"
                );
            }
            if let Some(secret) = v["secret"]["secretName"].as_str() {
                assert!(secrets.contains_key(secret), "{name}: no Secret {secret}");
            }
        }
        // Every Service that selects these pods targets a port they have.
        let ports = c["ports"].as_array().unwrap();
        for ((skind, sname), s) in &k {
            if skind != "Service" {
                continue;
            }
            let selects = s["spec"]["selector"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(l, v)| &labels[l] == v);
            if !selects {
                continue;
            }
            for p in s["spec"]["ports"].as_array().unwrap() {
                assert!(
                    ports
                        .iter()
                        .any(|cp| cp["name"] == p["targetPort"] && cp["protocol"] == p["protocol"]),
                    "Service {sname}: no container port {} ({})",
                    p["targetPort"],
                    p["protocol"]
                );
            }
        }
        if image.starts_with("chaperone/recorder") {
            let args = command(&c["args"]);
            check_subcommand(name, &args[0], &have);
        }
    }
    // Some Service selects every Deployment and StatefulSet.
    for ((kind, name), d) in &k {
        if matches!(kind.as_str(), "Deployment" | "StatefulSet") {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            assert!(
                k.iter().any(|((sk, _), s)| sk == "Service"
                    && s["spec"]["selector"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(l, v)| &labels[l] == v)),
                "no Service for {name}"
            );
        }
    }

    // The recorder's and review service's files load with every key known.
    let rec = &get("ConfigMap", "chaperone-recorder")["data"];
    check_recorder_config(
        "recorder.toml",
        str_of(&rec["recorder.toml"], "recorder.toml"),
        &secrets["chaperone-recorder-env"],
    );
    check_recorder_config(
        "review-store.toml",
        str_of(&rec["review-store.toml"], "review-store.toml"),
        &secrets["chaperone-review-env"],
    );

    // The gateway: its configuration as the binary builds it in the pod.
    let d = get("Deployment", "chaperone-gateway");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = command(&c["args"]);
    assert!(
        !args.iter().any(|a| a == "--dev"),
        "production runs without --dev"
    );
    let file = flag(&args, "--config").unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let config_mount = mounts.iter().find(|m| m["mountPath"] == file).unwrap();
    let volume = |m: &Value| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap()
            .clone()
    };
    let cm = str_of(&volume(config_mount)["configMap"]["name"], "configMap").to_owned();
    let toml_text = str_of(
        &get("ConfigMap", &cm)["data"][str_of(&config_mount["subPath"], "subPath")],
        "toml",
    );
    let mut config = Config::from_toml(toml_text).unwrap();
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        env.extend(secrets[str_of(&from["secretRef"]["name"], "secretRef")].clone());
    }
    for e in c["env"].as_array().unwrap() {
        if let Some(v) = e["value"].as_str() {
            // Kubernetes expands $(VAR) from earlier variables; the node's
            // address is the downward API's, here a documentation address.
            env.insert(
                str_of(&e["name"], "env").to_owned(),
                v.replace("$(NODE_IP)", "198.51.100.7"),
            );
        } else {
            assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
        }
    }
    apply_env(&mut config, &env);
    config.validate().unwrap_or_else(|e| {
        panic!("the gateway's ConfigMap is not a valid production configuration: {e}")
    });
    let port = |name: &str| -> &Value {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    assert_eq!(port("http")["containerPort"], config.http.listen.port());
    assert_eq!(
        port("metrics")["containerPort"],
        port_of(&config.metrics.listen)
    );
    let media = port("media");
    assert_eq!(media["protocol"], "UDP");
    assert_eq!(media["containerPort"], config.media.udp_listen.port());
    assert_eq!(
        media["hostPort"],
        config.media.udp_listen.port(),
        "media is reachable on the node"
    );
    assert_eq!(
        port_of(&config.media.advertised),
        config.media.udp_listen.port()
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        port_of(&config.metrics.listen).to_string().as_str()
    );
    // Keys are files of the mounted Secret.
    assert!(
        !config.recorder.urls.is_empty(),
        "production gateways stream to the recorder service"
    );
    {
        let key_file = &config.tokens.signing_key_file;
        let (dir, name) = key_file.rsplit_once('/').unwrap();
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        let secret = str_of(&volume(m)["secret"]["secretName"], "secretName").to_owned();
        assert!(
            secrets[secret.as_str()].contains_key(name),
            "Secret {secret} has no {name}"
        );
    }
    assert!(
        !config.oidc.client_secret.is_empty(),
        "the client secret comes from a Secret"
    );
}
