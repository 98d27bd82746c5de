//! A private coturn (`turnserver`, Debian package `coturn`) for one test:
//! TURN over UDP and TCP on one free port and TURN over TLS on another,
//! with a self-signed certificate made by `openssl` at start, checking the
//! TURN REST credentials the gateway issues (`use-auth-secret` with the
//! gateway's `turn.shared_secret`). Stopped, and its files removed, when
//! dropped.
//!
//! coturn refuses to relay to loopback peers by default, and the SFU of a
//! test gateway is a loopback peer: this one is started with
//! `--allow-loopback-peers` (never do that in production). Started with
//! `-n`, it reads no configuration file (so none of the example file's
//! `denied-peer-ip` ranges apply), keeps its user database, pid file and
//! log in its own directory, and opens no admin CLI port.
//!
//! Chromium accepts the self-signed certificate of a `turns:` URL only when
//! told to: [`TurnServer::chromium_trust_flag`] is the flag that trusts this
//! one certificate's key and no other.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{ChildGuard, free_port, scratch_dir, wait_for_port};

/// Where a [`TurnServer`] listens and relays from.
#[derive(Clone, Debug)]
pub struct TurnOptions {
    /// The address its listeners bind and its relayed sockets use
    /// (`listening-ip` and `relay-ip`): loopback, or a test namespace's.
    pub address: Ipv4Addr,
    /// Run it inside this network namespace (`ip netns exec`), if any.
    pub netns: Option<String>,
}

impl Default for TurnOptions {
    fn default() -> Self {
        Self {
            address: Ipv4Addr::LOCALHOST,
            netns: None,
        }
    }
}

/// A running private coturn.
#[derive(Debug)]
pub struct TurnServer {
    address: Ipv4Addr,
    port: u16,
    tls_port: u16,
    spki: String,
    dir: PathBuf,
    child: ChildGuard,
}

impl TurnServer {
    /// coturn on loopback checking credentials made with `secret` (the
    /// gateway's `turn.shared_secret`). Fails, never skips, when coturn is
    /// missing (`scripts/test.sh` installs it).
    pub fn start(secret: &str) -> Result<Self> {
        Self::start_with(secret, &TurnOptions::default())
    }

    /// coturn as `options` say.
    pub fn start_with(secret: &str, options: &TurnOptions) -> Result<Self> {
        let dir = scratch_dir("turn")?;
        let (cert, key) = self_signed(&dir, options.address)?;
        let spki = spki_sha256(&cert)?;
        // Two ports that were free on loopback a moment ago; in a namespace
        // of the test's own nothing else listens.
        let port = free_port()?;
        let tls_port = free_port()?;
        let mut cmd = match &options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "turnserver"]);
                c
            }
            None => Command::new("turnserver"),
        };
        cmd.arg("-n")
            .arg(format!("--listening-ip={}", options.address))
            .arg(format!("--relay-ip={}", options.address))
            .arg(format!("--listening-port={port}"))
            .arg(format!("--tls-listening-port={tls_port}"))
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={secret}"))
            .arg("--realm=chaperone.test")
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--pkey={}", key.display()))
            .arg("--allow-loopback-peers")
            .arg("--no-dtls")
            .arg("--no-tlsv1")
            .arg("--no-tlsv1_1")
            .arg("--no-cli")
            .arg("--fingerprint")
            // Sessions and allocations in the log, for the tests to check.
            .arg("--verbose")
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .arg("--simple-log")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // `ip netns exec` execs turnserver: the guard's id is coturn's own.
        let mut child = ChildGuard::spawn("turnserver (coturn)", &mut cmd)?;
        if options.address.is_loopback() {
            wait_for_port(&mut child, tls_port, Duration::from_secs(20))?;
            wait_for_port(&mut child, port, Duration::from_secs(20))?;
        } else {
            wait_for_addr(
                &mut child,
                options.address,
                tls_port,
                Duration::from_secs(20),
            )?;
            wait_for_addr(&mut child, options.address, port, Duration::from_secs(20))?;
        }
        Ok(Self {
            address: options.address,
            port,
            tls_port,
            spki,
            dir,
            child,
        })
    }

    /// `turn:<address>:<port>?transport=udp`.
    pub fn udp_url(&self) -> String {
        format!("turn:{}:{}?transport=udp", self.address, self.port)
    }

    /// `turn:<address>:<port>?transport=tcp`: TURN over TCP.
    pub fn tcp_url(&self) -> String {
        format!("turn:{}:{}?transport=tcp", self.address, self.port)
    }

    /// `turns:<address>:<tls port>?transport=tcp`: TURN over TLS.
    pub fn tls_url(&self) -> String {
        format!("turns:{}:{}?transport=tcp", self.address, self.tls_port)
    }

    /// The Chromium flag that trusts this server's self-signed certificate
    /// (by the SHA-256 of its public key) and nothing else:
    /// `--ignore-certificate-errors-spki-list=<base64>`.
    pub fn chromium_trust_flag(&self) -> String {
        format!("--ignore-certificate-errors-spki-list={}", self.spki)
    }

    /// coturn's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }

    /// Fails if coturn has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed EC certificate for `address` (its only subject
/// alternative name), valid for a day: `(cert.pem, key.pem)` in `dir`.
fn self_signed(dir: &Path, address: Ipv4Addr) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={address}"))
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{address}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (scripts/test.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((cert, key))
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of `cert`, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_sha256(cert: &Path) -> Result<String> {
    let step = |args: &[&str], input: &[u8]| -> Result<Vec<u8>> {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running openssl")?;
        child
            .stdin
            .take()
            .context("openssl's stdin was piped")?
            .write_all(input)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    };
    let pem = std::fs::read(cert)?;
    let public = step(&["x509", "-pubkey", "-noout"], &pem)?;
    let der = step(&["pkey", "-pubin", "-outform", "der"], &public)?;
    let digest = step(&["dgst", "-sha256", "-binary"], &der)?;
    let b64 = step(&["base64", "-A"], &digest)?;
    Ok(String::from_utf8(b64)?.trim().to_owned())
}

/// Waits until something accepts TCP connections on `address:port`.
fn wait_for_addr(
    child: &mut ChildGuard,
    address: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<()> {
    let addr = std::net::SocketAddr::new(IpAddr::V4(address), port);
    let deadline = crate::clock::now() + timeout;
    loop {
        child.check_running()?;
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if crate::clock::now() > deadline {
            bail!(
                "{} did not listen on {addr} within {timeout:?}",
                child.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
