//! What the deployment tests share: reading `deploy/`'s files (YAML,
//! TOML, Grafana JSON), the metric names an expression uses, environment
//! overrides applied to a `Config`, ports, flags and commands of services,
//! and the checks every image and Dockerfile must pass.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub use std::collections::{BTreeMap, BTreeSet};
pub use std::path::{Path, PathBuf};
pub use std::process::Command;

pub use chaperone_gateway::config::Config;
pub use chaperone_testkit::gateway::{Gateway, http_get};
pub use chaperone_testkit::process::binary;
pub use chaperone_testkit::recorder::Recorder;
pub use serde::Deserialize;
pub use serde_json::Value;

/// Series that come from Prometheus itself and the blackbox exporter, not
/// from our binaries: `up` (the scrape answered) and `probe_success` (the
/// exporter's GET of `/readyz` answered 2xx), the two availability signals
/// the rules alert on.
pub const EXTERNAL_METRICS: &[&str] = &["up", "probe_success"];

pub fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} holds one document", path.display());
    docs.remove(0)
}

pub fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// Identifiers in a PromQL expression that name our series or the two
/// external ones (label names, functions and keywords are neither).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
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
pub fn jobs(expr: &str) -> BTreeSet<String> {
    expr.match_indices("job=\"")
        .filter_map(|(i, m)| {
            let rest = &expr[i + m.len()..];
            rest.split('"').next().map(str::to_owned)
        })
        .collect()
}

/// The series names a scrape exposes (histograms as their `_bucket`,
/// `_sum` and `_count` series).
pub fn exported(scrape: &str) -> BTreeSet<String> {
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
pub fn dashboard_exprs() -> Vec<(String, String)> {
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
pub fn rule_exprs() -> Vec<(String, String)> {
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

pub fn promtool(args: &[&str], dir: &Path) {
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

/// Dotted keys of a TOML table (`oidc.claims.roles.pupils`).
pub fn toml_keys(t: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
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

pub fn toml_value<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// Applies `CHAPERONE_*` variables the way the gateway does, checking each
/// one names a real key and takes its value.
pub fn apply_env(config: &mut Config, env: &BTreeMap<String, String>) {
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

pub fn env_map(v: &Value) -> BTreeMap<String, String> {
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

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The word after `name` in `words`.
pub fn flag_of<'a>(words: &[&'a str], name: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == name)
        .and_then(|i| words.get(i + 1).copied())
}

/// The value of `--flag=value` or `--flag value` in a command.
pub fn flag<'a>(cmd: &'a [String], name: &str) -> Option<&'a str> {
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

pub fn command(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(|s| str_of(s, "command").to_owned()).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The subcommands `recorder` has: the "Commands:" section of its `--help`.
pub fn recorder_subcommands() -> BTreeSet<String> {
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

pub fn check_subcommand(what: &str, sub: &str, have: &BTreeSet<String>) {
    assert!(
        have.contains(sub),
        "{what} runs `recorder {sub}`, which does not exist"
    );
}

/// Third-party images are pinned to a version; ours are built here.
pub fn check_image(what: &str, image: &str) {
    let (_, tag) = image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{what}: image {image} has no tag"));
    assert!(
        tag != "latest" && !tag.is_empty(),
        "{what}: image {image} is not pinned"
    );
}

/// A Dockerfile builds the binary in one stage and ships it in another.
pub fn check_dockerfile(path: &Path, bin: &str) {
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

/// A recorder service file (`recorder serve --config`) or a review store
/// file (`recorder review --store-config`) loads with every key known.
/// `env` is what the deployment adds from Secrets.
pub fn check_recorder_config(what: &str, text: &str, env: &BTreeMap<String, String>) {
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
pub fn manifests() -> BTreeMap<(String, String), Value> {
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
