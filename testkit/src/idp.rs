//! The real OpenID provider for end-to-end tests: npm `oidc-provider`
//! (`tests/idp/provider.mjs`) with the demo school, on a free loopback port.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::process::{ChildGuard, free_port, scratch_dir, wait_for_port};

/// A person the provider knows.
#[derive(Clone, Debug)]
pub struct IdpUser {
    /// `sub`.
    pub sub: String,
    /// What is typed into the login form.
    pub login: String,
    /// `name`.
    pub name: String,
    /// `groups`.
    pub groups: Vec<String>,
    /// `classes`.
    pub classes: Vec<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// `email` (with the `email` scope), if any.
    pub email: Option<String>,
    /// `email_verified`: whether the provider vouches for `email`.
    pub email_verified: bool,
}

fn user(login: &str, name: &str, groups: &[&str], classes: &[&str], mfa: bool) -> IdpUser {
    let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
    IdpUser {
        sub: format!("sub-{login}"),
        login: login.to_owned(),
        name: name.to_owned(),
        groups: v(groups),
        classes: v(classes),
        amr: if mfa { v(&["pwd", "mfa"]) } else { v(&["pwd"]) },
        acr: mfa.then(|| "urn:mfa".to_owned()),
        email: None,
        email_verified: false,
    }
}

/// `person` with an e-mail address, verified by the provider or not.
fn with_email(person: IdpUser, email: &str, verified: bool) -> IdpUser {
    IdpUser {
        email: Some(email.to_owned()),
        email_verified: verified,
        ..person
    }
}

/// The demo school as a real provider knows it. Teachers are in the group
/// `staff-teachers` (so the gateway's role mapping must be configured).
pub fn demo_users() -> Vec<IdpUser> {
    vec![
        user("teacher", "Ms Rivera", &["staff-teachers"], &[], true),
        user("teacher-nomfa", "Mr Slow", &["staff-teachers"], &[], false),
        user("pupil1", "Ali", &["pupils"], &["7A"], false),
        user("pupil2", "Bea", &["pupils"], &["7A"], false),
        user("pupil3", "Cal", &["pupils"], &["7A"], false),
        user("pupil-7b", "Dee", &["pupils"], &["7B"], false),
        user("slt", "Mr Okafor", &["slt"], &[], true),
        user("dsl", "Mrs Chen", &["dsl"], &[], true),
        user("admin", "Sam Admin", &["admins"], &[], true),
        with_email(
            user("visitor", "Inspector Hale", &["visitors"], &[], true),
            "hale@inspectorate.example",
            true,
        ),
        // Another account giving the inspector's address, which the
        // provider has not verified.
        with_email(
            user("visitor-unverified", "Not Hale", &["visitors"], &[], true),
            "hale@inspectorate.example",
            false,
        ),
        user("nobody", "No Role", &["parents"], &[], false),
    ]
}

/// A running provider; stopped and its files removed on drop.
#[derive(Debug)]
pub struct Idp {
    port: u16,
    dir: PathBuf,
    child: ChildGuard,
}

/// `tests/idp` of the source tree: the npm package (its `package.json`,
/// the scripts, `node_modules` after `npm ci`), beside this crate since the
/// harness moved out of `tests/`.
fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/idp")
}

/// Fails clearly if the npm packages are not installed.
pub fn check_installed() -> Result<()> {
    if !package_dir().join("node_modules/oidc-provider").exists() {
        bail!("tests/idp/node_modules is missing: run scripts/test.sh (it runs npm ci)");
    }
    Ok(())
}

impl Idp {
    /// Starts the provider for one client (`chaperone`, `secret`) whose
    /// redirect URI is `redirect_uri`.
    pub fn start(secret: &str, redirect_uri: &str, users: &[IdpUser]) -> Result<Self> {
        check_installed()?;
        let port = free_port()?;
        let dir = scratch_dir("idp")?;
        let users: Vec<_> = users
            .iter()
            .map(|u| {
                json!({"sub": u.sub, "login": u.login, "name": u.name, "groups": u.groups,
                       "classes": u.classes, "amr": u.amr, "acr": u.acr,
                       "email": u.email, "email_verified": u.email_verified})
            })
            .collect();
        let config = json!({
            "port": port,
            "issuer": format!("http://127.0.0.1:{port}"),
            "keys_file": dir.join("keys.json"),
            "clients": [{"client_id": "chaperone", "client_secret": secret, "redirect_uris": [redirect_uri]}],
            "users": users,
        });
        std::fs::write(dir.join("config.json"), config.to_string())?;
        let child = Self::spawn(&dir, port)?;
        Ok(Self { port, dir, child })
    }

    fn spawn(dir: &std::path::Path, port: u16) -> Result<ChildGuard> {
        let mut cmd = Command::new("node");
        cmd.arg(package_dir().join("provider.mjs"))
            .arg(dir.join("config.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn("oidc-provider (node)", &mut cmd)?;
        // Node loads oidc-provider and its dependencies first: on a loaded
        // 2-core machine that has taken over 20 s (CI run of 2026-12-07).
        wait_for_port(&mut child, port, Duration::from_secs(60))
            .context("the test identity provider did not start")?;
        Ok(child)
    }

    /// The issuer (`http://127.0.0.1:<port>`).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Restarts on the same port and issuer; with `rotate_keys`, with a new
    /// signing key (a provider key rotation).
    pub fn restart(&mut self, rotate_keys: bool) -> Result<()> {
        self.child.kill();
        if rotate_keys {
            std::fs::remove_file(self.dir.join("keys.json"))?;
        }
        self.child = Self::spawn(&self.dir, self.port)?;
        Ok(())
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `node tests/idp/<script>` with `env`, at most `timeout`; returns
/// its stdout's JSON lines, or fails with its stderr.
pub fn run_node_script(
    script: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Vec<serde_json::Value>> {
    check_installed()?;
    let mut cmd = Command::new("node");
    cmd.arg(package_dir().join(script))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("starting node")?;
    let deadline = crate::clock::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if crate::clock::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{script} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{script} failed ({}): {}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}
