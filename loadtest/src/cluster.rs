//! A gateway cluster on one machine: `n` real `gateway --dev` processes
//! sharing a private, durable `redis-server` and one `recorder serve`, as
//! a deployment behind a load balancer does. Every node has its own ports,
//! spool and id; they share the public URL (node 0's here), the token key
//! and the store. Used by the `failover` and `drain` scenarios and by the
//! cluster tests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chaperone_protocol::{LessonId, UserRef};
use chaperone_testkit::gateway::http_get;
use chaperone_testkit::process::{
    ChildGuard, Launch, binary, free_port, scratch_dir, wait_for_port,
};
use chaperone_testkit::recorder::Recorder;
use chaperone_testkit::redis::RedisServer;
use chaperone_tokens::{AccountClaims, KeySet, RoomClaims, TokenIssuer};

const KID: &str = "cluster-test";

/// One gateway node's fixed place: ports, id, directory.
#[derive(Debug)]
pub struct NodeSlot {
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    pub starts: u32,
    pub child: Option<ChildGuard>,
}

/// Gateway nodes, their Redis and recorder, and the token issuer they share.
#[derive(Debug)]
pub struct Cluster {
    pub redis: RedisServer,
    pub recorder: Recorder,
    pub nodes: Vec<NodeSlot>,
    pub public: String,
    pub issuer: TokenIssuer,
    key_file: PathBuf,
    prefix: String,
}

impl Cluster {
    /// Starts `n` nodes (node 0's URL is the public one). Ports are chosen
    /// before the processes bind them, so another process may take one in
    /// between: then everything starts again on new ports (three tries).
    pub fn start(n: usize, prefix: &str) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(n, prefix) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    eprintln!("cluster did not start ({e:#}); again on new ports");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("cluster did not start")))
    }

    fn try_start(n: usize, prefix: &str) -> Result<Self> {
        let redis = RedisServer::start_durable()?;
        let dir = scratch_dir("cluster")?;
        let key_file = dir.join("signing-key.pem");
        let status = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key_file)
            .status()
            .context("openssl genpkey")?;
        if !status.success() {
            bail!("openssl genpkey: {status}");
        }
        let pem = std::fs::read_to_string(&key_file)?;
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(NodeSlot {
                port: free_port()?,
                metrics_port: free_port()?,
                dir: dir.join(format!("node{i}")),
                starts: 0,
                child: None,
            });
        }
        let public = format!("http://127.0.0.1:{}", nodes[0].port);
        let recorder =
            Recorder::start(&public, &[("CHAPERONE_RECORDER_ARCHIVE_SEGMENT_SECS", "2")])?;
        let issuer = TokenIssuer {
            issuer: public.clone(),
            room_audience: public.clone(),
            service_audience: "chaperone-recorder".to_owned(),
            keys: KeySet::from_pkcs8_pem(KID, &pem).map_err(|e| anyhow!("{e}"))?,
        };
        let mut cluster = Self {
            redis,
            recorder,
            nodes,
            public,
            issuer,
            key_file,
            prefix: prefix.to_owned(),
        };
        for i in 0..n {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// (Re)starts node `i` with a fresh node id.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        let public = self.public.clone();
        let recorder_url = self.recorder.url();
        // Pages may be served by any node (behind no load balancer here).
        let origins: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.port))
            .collect();
        let slot = &mut self.nodes[i];
        slot.starts += 1;
        std::fs::create_dir_all(&slot.dir)?;
        let env = [
            ("CHAPERONE_HTTP_LISTEN", format!("127.0.0.1:{}", slot.port)),
            ("CHAPERONE_HTTP_PUBLIC_URL", public),
            (
                "CHAPERONE_METRICS_LISTEN",
                format!("127.0.0.1:{}", slot.metrics_port),
            ),
            ("CHAPERONE_HTTP_ALLOWED_ORIGINS", origins.join(",")),
            ("CHAPERONE_STORE_KIND", "redis".to_owned()),
            ("CHAPERONE_STORE_REDIS_URL", self.redis.url()),
            ("CHAPERONE_STORE_KEY_PREFIX", self.prefix.clone()),
            (
                "CHAPERONE_TOKENS_SIGNING_KEY_FILE",
                self.key_file.display().to_string(),
            ),
            ("CHAPERONE_TOKENS_SIGNING_KEY_ID", KID.to_owned()),
            ("CHAPERONE_RECORDER_URLS", recorder_url),
            (
                "CHAPERONE_FEED_SPOOL_DIR",
                slot.dir.join("spool").display().to_string(),
            ),
            (
                "CHAPERONE_CLUSTER_NODE_ID",
                format!("node{i}-{}", slot.starts),
            ),
            (
                "CHAPERONE_CLUSTER_NODE_URL",
                format!("http://127.0.0.1:{}", slot.port),
            ),
            (
                "CHAPERONE_SESSION_LESSON_LOOKUPS_PER_MINUTE",
                "100000".to_owned(),
            ),
            (
                "CHAPERONE_LOG",
                "warn,chaperone_gateway::cluster=info".to_owned(),
            ),
        ];
        let mut child = Launch::new(&format!("gateway node{i}"), binary("gateway")?)
            .arg("--dev")
            .envs(env)
            .current_dir(slot.dir.clone())
            .log(true)
            .spawn()?;
        wait_for_port(&mut child, slot.port, Duration::from_secs(30))?;
        slot.child = Some(child);
        Ok(())
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s metrics address.
    pub fn metrics_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].metrics_port)
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().and_then(|c| c.id())
    }

    /// The prefix of the nodes' Redis keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill();
        }
    }

    pub fn signal(&self, i: usize, name: &str) -> Result<()> {
        self.nodes[i]
            .child
            .as_ref()
            .context("node not running")?
            .signal(name)
    }

    pub fn child(&mut self, i: usize) -> Option<&mut ChildGuard> {
        self.nodes[i].child.as_mut()
    }

    /// A metric's value on node `i` (sum over its label sets), if it answers.
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        self.metric_where(i, name, "")
    }

    /// A metric's value on node `i`, summed over the label sets that
    /// contain `labels` (`result="ok"`).
    pub fn metric_where(&self, i: usize, name: &str, labels: &str) -> Option<f64> {
        let (status, body) = http_get(self.nodes[i].metrics_port, "/metrics").ok()?;
        if status != 200 {
            return None;
        }
        let mut sum = None;
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let metric = key.split('{').next().unwrap_or(key);
            if metric == name && key.contains(labels) {
                *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        sum
    }

    /// What each node says it owns (for failure messages).
    pub fn owned(&self) -> Vec<Option<f64>> {
        (0..self.nodes.len())
            .map(|i| self.metric(i, "chaperone_cluster_lessons_owned"))
            .collect()
    }

    /// The node that owns a lesson now, by its metrics.
    pub fn owner(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].child.is_some()
                && self.metric(i, "chaperone_cluster_lessons_owned") == Some(1.0)
        })
    }

    /// `recorder verify --json` of an ended lesson's archive, once its
    /// final checkpoint is written (the recorder closes it a few seconds
    /// after the lesson's `End`; at most 60 s).
    pub fn verify(&self, lesson: LessonId) -> Result<serde_json::Value> {
        let store = self.recorder.store_dir();
        let key = store.join(format!("lessons/{lesson}/recorder.pub"));
        let deadline = crate::clock::now() + Duration::from_secs(60);
        let recorder = binary("recorder")?;
        loop {
            let out = std::process::Command::new(&recorder)
                .args(["verify", &lesson.to_string(), "--json", "--store"])
                .arg(&store)
                .arg("--key")
                .arg(&key)
                .output()
                .context("recorder verify")?;
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            if report["is_final"] == true || crate::clock::now() > deadline {
                return Ok(report);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A room token for a pupil of 7A.
    pub fn pupil(&self, lesson: LessonId, n: usize) -> String {
        let user = UserRef::new("urn:cluster-test", format!("pupil-{n}"))
            .unwrap_or_else(|e| panic!("pupil {n}: {e}"));
        self.mint(
            lesson,
            user,
            &format!("Pupil {n}"),
            AccountClaims {
                pupil_classes: vec!["7A".into()],
                ..AccountClaims::default()
            },
        )
    }

    /// A room token for the school's safeguarding lead (an observer).
    pub fn observer(&self, lesson: LessonId) -> String {
        let user =
            UserRef::new("urn:cluster-test", "dsl").unwrap_or_else(|e| panic!("observer: {e}"));
        self.mint(
            lesson,
            user,
            "Safeguarding lead",
            AccountClaims {
                staff: true,
                safeguarding_observer: true,
                ..AccountClaims::default()
            },
        )
    }

    /// A room token with the same person and account as `like` (e.g. the
    /// teacher's, once the node that issued it is gone).
    pub fn like(&self, like: &RoomClaims) -> String {
        self.mint(
            like.lesson,
            like.user.clone(),
            &like.name,
            like.account.clone(),
        )
    }

    fn mint(&self, lesson: LessonId, user: UserRef, name: &str, account: AccountClaims) -> String {
        let now = crate::clock::unix_ns() / 1_000_000_000;
        let jti = format!("{:032x}", rand::random::<u128>());
        self.issuer
            .issue_room(now, 120, jti, lesson, user, name.into(), account)
            .unwrap_or_else(|e| panic!("a room token could not be signed: {e}"))
    }
}
