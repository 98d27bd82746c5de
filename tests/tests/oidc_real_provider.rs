//! The gateway binary against a real, OpenID-certified provider (npm
//! `oidc-provider`, started on a free loopback port with the demo school)
//! and a real browser (Debian Chromium through playwright-core): people
//! sign in and land on their pages (and on `gateway --dev`, through its
//! built-in provider), each page with a skip link, one live region and no
//! refused API call of its own; the provider's key rotation is
//! followed; a provider whose discovery names another issuer is refused;
//! an inspector granted by e-mail on the leaders' page gets in once the
//! provider vouches for the address (`email_verified`), and an account
//! giving the same address unverified does not.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use chaperone_testkit::gateway::{Gateway, http_get};
use chaperone_testkit::idp::{Idp, demo_users, run_node_script};
use chaperone_testkit::process::free_port;

const SECRET: &str = "test-client-secret-0123456789";

/// A gateway configuration file for `issuer`, mapping the provider's groups.
fn config_file(issuer: &str, port: u16) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("chaperone-gw-{}-{port}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            r#"
[oidc]
issuer = "{issuer}"
client_id = "chaperone"
client_secret = "{SECRET}"
scopes = ["openid", "profile", "email", "school"]

[oidc.claims]
mfa_acr = ["urn:mfa"]

[oidc.claims.roles]
staff-teachers = "teacher"
pupils = "pupil"
slt = "slt"
dsl = "dsl"
admins = "admin"
visitors = "visitor"
"#
        ),
    )
    .unwrap();
    path
}

struct Setup {
    idp: Idp,
    gateway: Gateway,
    config: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

fn setup(issuer_override: Option<&str>) -> Setup {
    let port = free_port().unwrap();
    let idp = Idp::start(
        SECRET,
        &format!("http://127.0.0.1:{port}/auth/callback"),
        &demo_users(),
    )
    .unwrap();
    let issuer = issuer_override.map_or_else(
        || idp.issuer(),
        |f| f.replace("{port}", &idp.issuer()[17..]),
    );
    let config = config_file(&issuer, port);
    let gateway =
        Gateway::start_dev_on(port, &["--config", config.to_str().unwrap()], &[]).unwrap();
    Setup {
        idp,
        gateway,
        config,
    }
}

fn land(gateway: &Gateway, logins: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEWAY_URL", gateway.base_url()),
        ("LOGINS", logins.to_owned()),
    ];
    if let Ok(dir) = std::env::var("CHAPERONE_SCREENSHOTS") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    run_node_script("login-lands.mjs", &env, Duration::from_secs(120))
        .unwrap()
        .iter()
        .map(landed)
        .collect()
}

/// (login, page) of one landing, after checking what issue 19 found broken
/// on every page: a skip link and one polite live region, and no API call
/// of the page's own refused (pupils' pages asked for `/api/people`).
fn landed(v: &serde_json::Value) -> (String, String) {
    let login = v["login"].as_str().unwrap().to_owned();
    assert_eq!(v["structure"], serde_json::json!([]), "{login}: {v}");
    assert_eq!(v["api_failures"], serde_json::json!([]), "{login}: {v}");
    (login, v["page"].as_str().unwrap_or("").to_owned())
}

#[test]
fn people_sign_in_in_chromium_and_land_on_their_pages() {
    let s = setup(None);
    let (status, body) = http_get(s.gateway.port(), "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("identity_provider"));
    let landed = land(&s.gateway, "teacher,pupil1,slt,nobody,teacher-nomfa");
    let expected = [
        ("teacher", "teacher"),
        ("pupil1", "pupil"),
        ("slt", "leader"),
        ("nobody", "no-access"),
        ("teacher-nomfa", "mfa-required"),
    ];
    assert_eq!(
        landed,
        expected
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn provider_key_rotation_is_followed() {
    let mut s = setup(None);
    assert_eq!(
        land(&s.gateway, "pupil1"),
        vec![("pupil1".into(), "pupil".into())]
    );
    s.idp.restart(true).unwrap();
    assert_eq!(
        land(&s.gateway, "pupil2"),
        vec![("pupil2".into(), "pupil".into())]
    );
}

#[test]
fn an_inspector_granted_by_email_gets_in_only_with_the_address_verified() {
    let s = setup(None);
    let steps = run_node_script(
        "visitor-e2e.mjs",
        &[("GATEWAY_URL", s.gateway.base_url())],
        Duration::from_secs(120),
    )
    .unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|v| v["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "lesson",
            "granted",
            "unverified_refused",
            "verified_claimed",
            "audited"
        ]
    );
    let _ = &s.idp;
}

#[test]
fn discovery_naming_another_issuer_is_refused() {
    // Same server, reached as "localhost": its discovery document says
    // 127.0.0.1, so the pinned issuer does not match.
    let s = setup(Some("http://localhost:{port}"));
    let (status, body) = http_get(s.gateway.port(), "/login").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("data-page=\"login-error\""), "{body}");
    assert!(body.contains("discovery"), "{body}");
    let (status, body) = http_get(s.gateway.port(), "/readyz").unwrap();
    assert_eq!(status, 503, "readiness follows the provider: {body}");
    let _ = &s.idp;
}

#[test]
fn gateway_dev_lets_a_newcomer_sign_in_as_each_demo_person() {
    let gateway = Gateway::start_dev(&[]).unwrap();
    let mut env = vec![
        ("GATEWAY_URL", gateway.base_url()),
        (
            "LOGINS",
            "teacher,pupil-a,pupil-b,pupil-c,pupil-7b,slt,dsl,admin,visitor".to_owned(),
        ),
        ("DEV_IDP", "1".to_owned()),
    ];
    if let Ok(dir) = std::env::var("CHAPERONE_SCREENSHOTS") {
        env.push(("SCREENSHOT_DIR", dir));
    }
    let landings: Vec<(String, String)> =
        run_node_script("login-lands.mjs", &env, Duration::from_secs(120))
            .unwrap()
            .iter()
            .map(landed)
            .collect();
    let pages: Vec<&str> = landings.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        pages,
        [
            "teacher", "pupil", "pupil", "pupil", "pupil", "leader", "leader", "leader", "visitor"
        ]
    );
}
