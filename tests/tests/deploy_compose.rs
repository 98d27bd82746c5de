//! `deploy/compose` (checked without a container engine: there is none
//! here) parses and agrees with what it runs: images built by a Dockerfile
//! (the production gateway without development mode), ports, secrets,
//! every `CHAPERONE_*` variable and the configuration it mounts.

mod deploy_support;

use deploy_support::*;

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
    let redis_cmd = command(&services["redis"]["command"]);
    let redis_port = flag(&redis_cmd, "--port").unwrap().to_owned();
    // Leases, epochs and snapshots survive a Redis restart only if it keeps
    // them on disk, every write.
    assert_eq!(flag(&redis_cmd, "--appendonly"), Some("yes"));
    assert_eq!(flag(&redis_cmd, "--appendfsync"), Some("always"));
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
