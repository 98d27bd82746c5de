//! `deploy/kubernetes` parses and agrees with what it runs: images the
//! README says how to build, ports, probes, secrets, every `CHAPERONE_*`
//! variable and the configuration it mounts.

mod deploy_support;

use deploy_support::*;

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
                v.replace("$(NODE_IP)", "198.51.100.7")
                    .replace("$(POD_IP)", "10.1.2.3"),
            );
        } else {
            // The node's and the pod's addresses, and the pod's name (the
            // cluster node id), from the downward API.
            let field = &e["valueFrom"]["fieldRef"]["fieldPath"];
            assert!(
                ["status.hostIP", "status.podIP", "metadata.name"]
                    .iter()
                    .any(|f| field == f),
                "{field}"
            );
            if field == "metadata.name" {
                env.insert(str_of(&e["name"], "env").to_owned(), "gateway-0".to_owned());
            }
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
