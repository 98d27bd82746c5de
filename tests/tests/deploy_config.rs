//! The reference configuration `deploy/chaperone.toml` loads through the
//! gateway's own `Config` and comments every key.

mod deploy_support;

use deploy_support::*;

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
