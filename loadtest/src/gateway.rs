//! The Chaperone adapter: starts the `gateway` binary (`--dev`, with a
//! signing key file so this generator can mint room tokens for synthetic
//! pupils of a lesson's class with the gateway's own [`TokenIssuer`]),
//! signs the teacher in through the development identity provider, creates
//! lessons through the API, and drives each participant over the lesson
//! WebSocket exactly as the browser client does.
//!
//! Nothing here weakens a gateway check: tokens are verified, single-use
//! and lesson-bound as always; the pupils are simply people of the class
//! the key's holder vouches for, which is what the key is for.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chaperone_protocol::signal::{ClientMsg, PROTOCOL_VERSION, ServerMsg, Target};
use chaperone_protocol::{LessonId, MediaSource, ParticipantId, TrackId, UserRef};
use chaperone_testkit::process::{ChildGuard, Launch, free_port, scratch_dir, wait_for_port};
use chaperone_testkit::recorder::Recorder;
use chaperone_tokens::{AccountClaims, KeySet, TokenIssuer};
use futures_util::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::clock;
use crate::media::{MediaPeer, Origin, PeerConfig, RunCtx, SigIn};
use crate::plan::{Control, ParticipantPlan, ParticipantReport, Role};

/// The key id the gateway signs with (its default `tokens.signing_key_id`).
const KID: &str = "gateway-1";
/// Room token lifetime for minted pupils (the gateway's cap is 300 s).
const TOKEN_SECS: u64 = 120;
/// Longest wait for one signaling step.
const STEP: Duration = Duration::from_secs(15);
/// The class every generated lesson is for.
pub const CLASS: &str = "7A";

/// A running gateway under test.
#[derive(Debug)]
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `http://127.0.0.1:<port>` of its metrics listener.
    pub metrics: String,
    issuer: TokenIssuer,
    child: ChildGuard,
    /// The recorder process its feeds go to, if it has its own.
    recorder: Option<Recorder>,
}

impl Gateway {
    /// Starts `bin --dev` on free loopback ports, pinned to `cpu` if given,
    /// recording with its embedded recorder or, given `recorder` (the
    /// binary), with a `recorder serve` process of its own on the same CPU.
    pub fn start(
        bin: &Path,
        recorder: Option<&Path>,
        cpu: Option<usize>,
        log: bool,
    ) -> Result<Self> {
        let dir = scratch_dir("loadtest-gateway")?;
        let key = dir.join("signing-key.pem");
        let status = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .context("running openssl genpkey (Debian package openssl)")?;
        if !status.success() {
            bail!("openssl genpkey failed: {status}");
        }
        let pem = std::fs::read_to_string(&key)?;
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let metrics_port = free_port()?;
        let recorder = recorder
            .map(|r| crate::recorder::start(r, &base, cpu, log))
            .transpose()?;
        let s = |k: &str, v: String| (k.to_owned(), v);
        let mut env = vec![
            s("CHAPERONE_HTTP_LISTEN", format!("127.0.0.1:{port}")),
            s(
                "CHAPERONE_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            ),
            s(
                "CHAPERONE_RECORDER_DIR",
                dir.join("recordings").display().to_string(),
            ),
            s(
                "CHAPERONE_TOKENS_SIGNING_KEY_FILE",
                key.display().to_string(),
            ),
            s("CHAPERONE_TOKENS_SIGNING_KEY_ID", KID.to_owned()),
            // One teacher session asks a token for every lesson of a run.
            s(
                "CHAPERONE_SESSION_LESSON_LOOKUPS_PER_MINUTE",
                "100000".to_owned(),
            ),
            // A shown log is at info, or as `CHAPERONE_LOG` says.
            s(
                "CHAPERONE_LOG",
                match (log, std::env::var("CHAPERONE_LOG")) {
                    (true, Ok(filter)) => filter,
                    (true, Err(_)) => "info".to_owned(),
                    (false, _) => "warn".to_owned(),
                },
            ),
        ];
        if let Some(r) = &recorder {
            env.push(s("CHAPERONE_RECORDER_URLS", r.url()));
        }
        let mut child = Launch::new("gateway", bin)
            .arg("--dev")
            .envs(env)
            .cpu(cpu)
            .work_dir(dir)
            .log(log)
            .spawn()?;
        wait_for_port(&mut child, port, Duration::from_secs(30))?;
        let issuer = TokenIssuer {
            issuer: base.clone(),
            room_audience: base.clone(),
            service_audience: "chaperone-recorder".to_owned(),
            keys: KeySet::from_pkcs8_pem(KID, &pem).map_err(|e| anyhow!("{e}"))?,
        };
        Ok(Self {
            base,
            metrics: format!("http://127.0.0.1:{metrics_port}"),
            issuer,
            child,
            recorder,
        })
    }

    /// The gateway's process id.
    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("gateway has no pid")
    }

    /// Its recorder's figures now, if it has one of its own.
    pub async fn recorder_sample(&self) -> Result<Option<crate::recorder::Sample>> {
        match &self.recorder {
            Some(r) => Ok(Some(crate::recorder::sample(r).await?)),
            None => Ok(None),
        }
    }

    /// One unlabelled figure of its `/metrics` by its name without the
    /// `chaperone_` prefix (`lessons_live`, `tokio_alive_tasks`), or `None`
    /// if it does not expose it.
    /// One scrape of `/metrics`.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .context("scraping the gateway's metrics")?
            .error_for_status()?
            .text()
            .await?)
    }

    pub async fn metric(&self, name: &str) -> Result<Option<i64>> {
        let text = self.metrics_text().await?;
        Ok(text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k.strip_prefix("chaperone_") == Some(name))
                .then(|| v.trim().parse::<f64>().ok().map(|f| f as i64))?
        }))
    }

    /// Fails if the gateway (or its recorder) died.
    pub fn check_running(&mut self) -> Result<()> {
        self.child.check_running()?;
        match &mut self.recorder {
            Some(r) => r.check_running(),
            None => Ok(()),
        }
    }

    /// A room token for synthetic pupil `n` of `lesson`'s class.
    pub fn mint_pupil(&self, lesson: &str, n: usize) -> Result<String> {
        let lesson: LessonId = lesson.parse().map_err(|e| anyhow!("lesson id: {e:?}"))?;
        let user = UserRef::new("urn:chaperone:loadtest", format!("pupil-{lesson}-{n}"))
            .map_err(|e| anyhow!("{e}"))?;
        let jti = format!("{:032x}", rand::random::<u128>());
        self.issuer
            .issue_room(
                clock::unix_ns() / 1_000_000_000,
                TOKEN_SECS,
                jti,
                lesson,
                user,
                format!("Pupil {n}"),
                AccountClaims {
                    pupil_classes: vec![CLASS.to_owned()],
                    ..AccountClaims::default()
                },
            )
            .map_err(|e| anyhow!("minting a room token: {e}"))
    }
}

/// A signed-in browser session (cookies, no automatic redirects).
#[derive(Debug)]
pub struct Session {
    base: String,
    cookies: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl Session {
    /// Signs in as `person` through the development identity provider.
    pub async fn login(base: &str, person: &str) -> Result<Self> {
        let mut s = Session {
            base: base.to_owned(),
            cookies: BTreeMap::new(),
            // No idle connections kept: what a soak counts of the
            // gateway's descriptors is not this client's pool.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()?,
        };
        let (_, h, _) = s.get("/login").await?;
        let to = location(&h).context("/login did not redirect")?;
        let (status, _, _) = s.get(&to).await?;
        if !status.is_success() {
            bail!("identity provider page: {status}");
        }
        let url = reqwest::Url::parse(&to)?;
        let mut form: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        form.push(("person".to_owned(), person.to_owned()));
        let req = s
            .http
            .post(s.url("/dev-idp/authorize"))
            .header("origin", s.base.clone())
            .form(&form);
        let (_, h, _) = s.send(req).await?;
        let callback = location(&h).context("the provider did not redirect back")?;
        let (status, _, body) = s.get(&callback).await?;
        if status.as_u16() != 303 {
            bail!("login as {person} refused: {status} {body}");
        }
        Ok(s)
    }

    fn url(&self, p: &str) -> String {
        if p.starts_with("http") {
            p.to_owned()
        } else {
            format!("{}{p}", self.base)
        }
    }

    async fn send(
        &mut self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, HeaderMap, String)> {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let resp = req.header("cookie", cookie).send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        for v in headers.get_all(SET_COOKIE) {
            let Ok(text) = v.to_str() else { continue };
            if let Some((k, v)) = text.split(';').next().and_then(|f| f.split_once('=')) {
                if v.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok((status, headers, resp.text().await?))
    }

    async fn get(&mut self, p: &str) -> Result<(reqwest::StatusCode, HeaderMap, String)> {
        let req = self.http.get(self.url(p));
        self.send(req).await
    }

    async fn post(&mut self, p: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let req = self
            .http
            .post(self.url(p))
            .header("origin", self.base.clone())
            .json(&body);
        let (status, _, text) = self.send(req).await?;
        if !status.is_success() {
            bail!("POST {p}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates a lesson for [`CLASS`] starting now; returns its id.
    pub async fn create_lesson(&mut self, title: &str) -> Result<String> {
        let now = clock::unix_ns() / 1_000_000;
        let v = self
            .post(
                "/api/lessons",
                serde_json::json!({"title": title, "class": CLASS,
                    "starts_at_ms": now, "ends_at_ms": now + 3_600_000}),
            )
            .await?;
        Ok(v["id"].as_str().context("lesson without id")?.to_owned())
    }

    /// A room token for `lesson` (the teacher's own).
    pub async fn room_token(&mut self, lesson: &str) -> Result<String> {
        let v = self
            .post(
                &format!("/api/lessons/{lesson}/token"),
                serde_json::json!({}),
            )
            .await?;
        Ok(v["token"].as_str().context("no token")?.to_owned())
    }
}

fn location(h: &HeaderMap) -> Option<String> {
    h.get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(base: &str, origin: &str, lesson: &str, token: &str) -> Result<Ws> {
    let ws_url = format!("{}/ws/lessons/{lesson}", base.replacen("http", "ws", 1));
    let mut req = ws_url.into_client_request()?;
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(origin)?);
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("chaperone.v1, chaperone.token.{token}"))?,
    );
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .context("lesson socket: timed out")?
        .context("lesson socket refused")?;
    let hello = serde_json::to_string(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
    })?;
    ws.send(Message::text(hello)).await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: &ClientMsg) -> Result<()> {
    ws.send(Message::text(serde_json::to_string(msg)?)).await?;
    Ok(())
}

/// Ends a lesson as its teacher: joins through `door` with `token`, sends
/// `end_lesson`, and waits (10 s at most) for the goodbye.
pub async fn end_lesson_via(door: &str, origin: &str, lesson: &str, token: &str) -> Result<()> {
    let mut ws = open(door, origin, lesson, token).await?;
    send(&mut ws, &ClientMsg::EndLesson).await?;
    let goodbye = async {
        while let Some(msg) = ws.next().await {
            match msg? {
                Message::Text(t) => {
                    if let Ok(ServerMsg::Goodbye { .. }) = ServerMsg::decode(t.as_bytes()) {
                        return Ok(());
                    }
                }
                Message::Close(_) => return Ok(()),
                _ => {}
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(STEP, goodbye)
        .await
        .context("no goodbye after end_lesson")??;
    Ok(())
}

/// Joins `lesson` through `door` with `token` until the server welcomes
/// the participant (which starts the lesson on that node's cluster), then
/// leaves. Fails on a refusal (a 503 while a lease lapses) or after 10 s.
pub async fn touch_via(door: &str, origin: &str, lesson: &str, token: &str) -> Result<()> {
    let mut ws = open(door, origin, lesson, token).await?;
    let welcome = async {
        while let Some(msg) = ws.next().await {
            match msg? {
                Message::Text(t) => match ServerMsg::decode(t.as_bytes()) {
                    Ok(ServerMsg::Welcome { .. }) => return Ok(()),
                    Ok(ServerMsg::Goodbye { .. }) => bail!("sent away"),
                    _ => {}
                },
                Message::Close(_) => bail!("closed before the welcome"),
                _ => {}
            }
        }
        bail!("closed before the welcome")
    };
    tokio::time::timeout(STEP, welcome)
        .await
        .context("no welcome")??;
    let _ = ws.close(None).await;
    Ok(())
}

/// The sources a participant's m-lines carry, in the order the SFU maps them.
const SOURCES: [MediaSource; 3] = [
    MediaSource::Microphone,
    MediaSource::Camera,
    MediaSource::ScreenShare,
];

/// Runs one participant until the run stops; never fails, reports instead.
pub async fn run_participant(
    base: Rc<String>,
    lesson_id: Rc<String>,
    plan: ParticipantPlan,
    token: String,
    ctx: Rc<RunCtx>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
) -> ParticipantReport {
    let origin = base.clone();
    run_participant_via(base, origin, lesson_id, plan, token, ctx, control).await
}

/// [`run_participant`] through `door` (any node of a cluster) for a page
/// served from `origin` (the school's one address).
pub async fn run_participant_via(
    door: Rc<String>,
    origin: Rc<String>,
    lesson_id: Rc<String>,
    plan: ParticipantPlan,
    token: String,
    ctx: Rc<RunCtx>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
) -> ParticipantReport {
    let base = door;
    let mut report = ParticipantReport {
        lesson: plan.lesson,
        pupil: match plan.role {
            Role::Pupil(n) => Some(n),
            Role::Teacher => None,
        },
        join_start_ns: clock::unix_ns(),
        ..ParticipantReport::default()
    };
    if let Err(e) = drive(
        &base,
        &origin,
        &lesson_id,
        &plan,
        &token,
        ctx,
        control,
        &mut report,
    )
    .await
    {
        report.failure.get_or_insert(format!("{e:#}"));
    }
    report
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    base: &str,
    origin: &str,
    lesson_id: &str,
    plan: &ParticipantPlan,
    token: &str,
    ctx: Rc<RunCtx>,
    mut control: Option<mpsc::UnboundedReceiver<Control>>,
    report: &mut ParticipantReport,
) -> Result<()> {
    let mut ws = open(base, origin, lesson_id, token).await?;
    let mut stop = ctx.stop.clone();
    let mut peer = None;
    let mut admit_requested = std::collections::BTreeSet::new();
    // The teacher's view of who is in, by name (to revoke one pupil's mic).
    let mut roster: HashMap<String, ParticipantId> = HashMap::new();
    let (reenable_tx, mut reenable_rx) = mpsc::unbounded_channel::<()>();
    let teacher = plan.role == Role::Teacher;
    loop {
        let answers = async {
            match peer.as_mut() {
                Some(p) => {
                    let p: &mut crate::media::PeerIo = p;
                    p.answers.recv().await
                }
                None => std::future::pending().await,
            }
        };
        let ctl = async {
            match control.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => bail!("lesson socket: unexpected {other:?}"),
                    Some(Err(e)) => bail!("lesson socket: {e}"),
                    None => bail!("lesson socket closed"),
                };
                let msg = ServerMsg::decode(text.as_bytes()).map_err(|e| anyhow!("{e}"))?;
                match msg {
                    ServerMsg::Welcome { you: id, .. } => {
                        report.tx_keys = SOURCES
                            .iter()
                            .take(plan.publish.len())
                            .map(|s| track_key(lesson_id, &TrackId::new(id, *s).to_string()))
                            .collect();
                    }
                    ServerMsg::Admitted => {
                        report.admitted_ns = Some(clock::unix_ns());
                        if teacher {
                            for (i, p) in plan.publish.iter().enumerate() {
                                if p.sending {
                                    send(&mut ws, &ClientMsg::SetSource { source: SOURCES[i], on: true }).await?;
                                }
                            }
                        } else if let Some(engagement) = plan.engagement {
                            send(&mut ws, &ClientMsg::SetEngagement { engagement }).await?;
                        }
                        let (media, offer) = MediaPeer::new(&PeerConfig {
                            publish: plan.publish.clone(),
                            origin: Origin::CaptureTime,
                            bind: std::net::Ipv4Addr::LOCALHOST.into(),
                            full: plan.full,
                            via: plan.link.clone(),
                        })
                        .await?;
                        let offer = offer.context("a participant always offers")?;
                        peer = Some(media.spawn(ctx.clone()));
                        send(&mut ws, &ClientMsg::Offer { sdp: offer }).await?;
                    }
                    ServerMsg::Answer { sdp } => deliver(report, peer.as_ref(), lesson_id, SigIn::Answer(sdp)),
                    ServerMsg::Offer { sdp } => deliver(report, peer.as_ref(), lesson_id, SigIn::Offer(sdp)),
                    ServerMsg::WaitingList { waiting }
                        if teacher && waiting.iter().any(|w| !admit_requested.contains(&w.id)) =>
                    {
                        admit_requested.extend(waiting.iter().map(|w| w.id));
                        send(&mut ws, &ClientMsg::AdmitAll).await?;
                    }
                    ServerMsg::ControlChanged { permission: chaperone_protocol::Permission::Microphone, granted: false, revoked: false } => {
                        if let Some(after) = plan.reenable_mic_after {
                            let tx = reenable_tx.clone();
                            tokio::task::spawn_local(async move {
                                tokio::time::sleep(after).await;
                                let _ = tx.send(());
                            });
                        }
                    }
                    ServerMsg::MediaQuality { video_paused } => {
                        report.video_paused.push((clock::unix_ns(), video_paused));
                    }
                    ServerMsg::Roster { participants } if teacher => {
                        roster = participants.into_iter().map(|p| (p.name, p.id)).collect();
                    }
                    ServerMsg::Goodbye { reason } => bail!("told goodbye: {reason:?}"),
                    // Refusals are part of some scenarios; only note them.
                    ServerMsg::Error { code, action } if std::env::var_os("LOADTEST_DEBUG").is_some() => {
                        eprintln!("loadtest: refused {action:?}: {code:?}");
                    }
                    _ => {}
                }
            }
            answer = answers => match answer {
                Some(sdp) => send(&mut ws, &ClientMsg::Answer { sdp }).await?,
                None => {
                    // The media peer stopped.
                    break;
                }
            },
            Some(()) = reenable_rx.recv() => {
                send(&mut ws, &ClientMsg::SetSource { source: MediaSource::Microphone, on: true }).await?;
            }
            c = ctl => match c {
                Some(Control::MuteAll) => {
                    report.mute_cmds_ns.push(clock::unix_ns());
                    send(&mut ws, &ClientMsg::TurnOff { target: Target::AllPupils, source: MediaSource::Microphone }).await?;
                }
                Some(Control::EndLesson) => send(&mut ws, &ClientMsg::EndLesson).await?,
                Some(Control::RevokeMic(n)) => {
                    let name = format!("Pupil {n}");
                    let Some(&participant) = roster.get(&name) else {
                        bail!("{name} is not in the roster to revoke");
                    };
                    report.mute_cmds_ns.push(clock::unix_ns());
                    send(&mut ws, &ClientMsg::SetPermission {
                        target: Target::One(participant),
                        permission: chaperone_protocol::Permission::Microphone,
                        granted: false,
                    }).await?;
                }
                None => control = None,
            },
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    let _ = ws.close(None).await;
    if let Some(p) = peer {
        report.media = p.done.await.unwrap_or_default();
        if let Some(f) = report.media.failure.clone() {
            bail!("media: {f}");
        }
    } else {
        bail!("never admitted");
    }
    Ok(())
}

/// A stream's run-wide key: the lesson and the SFU's track name (`p3/camera`;
/// str0m writes it into the SDP without the slash).
fn track_key(lesson_id: &str, track: &str) -> String {
    format!("{lesson_id}/{}", track.replace('/', ""))
}

/// Passes server SDP to the media peer, learning which track each of
/// its m-lines carries (the SFU names them by `msid`, e.g. `p3/camera`).
fn deliver(
    report: &mut ParticipantReport,
    peer: Option<&crate::media::PeerIo>,
    lesson_id: &str,
    msg: SigIn,
) {
    let (SigIn::Answer(sdp) | SigIn::Offer(sdp)) = &msg;
    if std::env::var_os("LOADTEST_DEBUG_SDP").is_some() {
        eprintln!("loadtest: server SDP for {:?}:\n{sdp}", report.pupil);
    }
    for s in crate::rtp::parse_sdp(sdp).1 {
        if let Some(track) = s.msid_track {
            report
                .rx_key_by_mid
                .insert(s.mid.clone(), track_key(lesson_id, &track));
        }
    }
    if let Some(p) = peer {
        let _ = p.sdp_in.send(msg);
    }
}
