//! The Janus adapter, for the side-by-side figures: Janus (Debian package
//! `janus`) with the VideoRoom plugin, driven over its WebSocket API by
//! the same media peers, measured the same way.
//!
//! One room per lesson (created through the API: 64 publishers, no bitrate
//! cap, Opus and VP8). Each participant opens one WebSocket and one
//! session; a participant that sends anything (the teacher, the pupils who
//! speak or have a camera on) joins as a publisher on one handle (its own
//! str0m offer, Janus's answer); everyone then joins as a subscriber on a
//! second handle to every other publisher of the room (multistream: one
//! peer connection, Janus's offer, our answer with `start`). Subscribing
//! waits until the room's publishers are all up (bounded), so no
//! renegotiation happens during a run.
//!
//! Janus relays RTP payloads untouched but negotiates neither
//! abs-capture-time nor abs-send-time, so its receivers read the origin
//! stamp from the payload of each frame's first packet, decrypting that one
//! packet ([`Origin::Payload`]); every packet is still counted from its
//! clear header.
//!
//! Janus never gathers ICE candidates on a loopback interface (its
//! `src/ice.c` skips `IFF_LOOPBACK`), so it runs on the machine's own IPv4
//! address and so do its peers here: Linux delivers traffic between two
//! local addresses through the loopback device, so nothing leaves the
//! machine either way.
//!
//! Janus has no waiting room and no server-side lesson controls, so only
//! `lesson31` and `capacity` are compared.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chaperone_testkit::process::{ChildGuard, Launch, free_port, scratch_dir, wait_for_port};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::clock;
use crate::media::{MediaPeer, Origin, PeerConfig, PeerIo, Publish, RunCtx, SigIn};
use crate::plan::{ParticipantPlan, ParticipantReport, Role};

/// Longest wait for one API answer, and for a room's publishers.
const STEP: Duration = Duration::from_secs(15);
const KEEPALIVE: Duration = Duration::from_secs(25);
/// Room ids start here.
const FIRST_ROOM: u64 = 4000;

/// The machine's first IPv4 address that is up and not loopback: the one
/// Janus gathers on (the same rule as its `src/ice.c`).
pub fn host_ipv4() -> Result<std::net::Ipv4Addr> {
    use nix::net::if_::InterfaceFlags;
    for a in nix::ifaddrs::getifaddrs()? {
        let up = a
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING);
        if !up || a.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    bail!("no IPv4 interface other than loopback: Janus has nothing to gather on")
}

thread_local! {
    static SELF_IP: std::cell::Cell<Option<std::net::IpAddr>> = const { std::cell::Cell::new(None) };
}

/// The address Janus's peers bind (set when Janus starts).
fn self_ip() -> std::net::IpAddr {
    SELF_IP
        .with(|c| c.get())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// A running Janus.
#[derive(Debug)]
pub struct Janus {
    child: ChildGuard,
    port: u16,
    /// Publishers expected per room, and those up so far.
    rooms: Rc<RefCell<HashMap<u64, RoomState>>>,
}

/// What the participants of one room know of each other.
#[derive(Debug, Default)]
pub struct RoomState {
    /// Publishers the plan has for this room.
    pub expected: usize,
    /// Feed ids of those that have published.
    pub feeds: Vec<u64>,
}

impl Janus {
    /// Starts `bin` with a scratch copy of the committed configuration in
    /// `config`, its WebSocket API on a free loopback port.
    pub fn start(bin: &Path, config: &Path, cpu: Option<usize>, log: bool) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "{} not found: install the Debian package janus (scripts/bench.sh does)",
                bin.display()
            );
        }
        let dir = scratch_dir("loadtest-janus")?;
        let port = free_port()?;
        let ip = host_ipv4()?;
        SELF_IP.with(|c| c.set(Some(ip.into())));
        for name in [
            "janus.jcfg",
            "janus.plugin.videoroom.jcfg",
            "janus.transport.websockets.jcfg",
        ] {
            let text = std::fs::read_to_string(config.join(name))
                .with_context(|| format!("reading {}", config.join(name).display()))?;
            let text = text.replace("ws_port = 8188", &format!("ws_port = {port}"));
            // janus.jcfg names 127.0.0.1 where the machine's address goes.
            let text = if name == "janus.jcfg" {
                text.replace("\"127.0.0.1\"", &format!("\"{ip}\""))
            } else {
                text
            };
            std::fs::write(dir.join(name), text)?;
        }
        let mut child = Launch::new("janus", bin)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .cpu(cpu)
            .work_dir(dir)
            .log(log)
            .spawn()?;
        wait_for_port(&mut child, port, Duration::from_secs(30))?;
        Ok(Self {
            child,
            port,
            rooms: Rc::default(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("janus has no pid")
    }

    /// Fails if it died.
    pub fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The rooms' shared state.
    pub fn rooms(&self) -> Rc<RefCell<HashMap<u64, RoomState>>> {
        self.rooms.clone()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket and one Janus session.
struct Client {
    ws: Ws,
    session: u64,
    next: u64,
    /// Messages that arrived while waiting for another transaction.
    backlog: VecDeque<Value>,
}

impl Client {
    async fn connect(url: &str) -> Result<Self> {
        let mut req = url.into_client_request()?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .context("janus socket: timed out")??;
        let mut c = Client {
            ws,
            session: 0,
            next: 1,
            backlog: VecDeque::new(),
        };
        let r = c.call(json!({"janus": "create"})).await?;
        c.session = r["data"]["id"].as_u64().context("no session id")?;
        Ok(c)
    }

    async fn send(&mut self, mut msg: Value) -> Result<String> {
        let tx = format!("t{}", self.next);
        self.next += 1;
        msg["transaction"] = json!(tx);
        if self.session != 0 {
            msg["session_id"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await?;
        Ok(tx)
    }

    async fn recv(&mut self) -> Result<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("janus socket: unexpected {other:?}"),
                Some(Err(e)) => bail!("janus socket: {e}"),
                None => bail!("janus socket closed"),
            }
        }
    }

    /// Sends `msg` and waits for its answer (skipping `ack`): `success`
    /// or the plugin's `event`; `error` becomes an error.
    async fn call(&mut self, msg: Value) -> Result<Value> {
        let tx = self.send(msg).await?;
        let deadline = clock::now() + STEP;
        loop {
            let m = tokio::time::timeout_at(deadline.into(), self.recv())
                .await
                .context("janus: no answer in time")??;
            if m["transaction"] != json!(tx) {
                self.backlog.push_back(m);
                continue;
            }
            match m["janus"].as_str() {
                Some("ack") => continue,
                Some("error") => bail!("janus error: {}", m["error"]),
                _ => {
                    if let Some(err) = m["plugindata"]["data"]["error"].as_str() {
                        bail!("videoroom error: {err}");
                    }
                    return Ok(m);
                }
            }
        }
    }

    /// Waits for Janus to say the peer connection of `handle` is up.
    async fn wait_webrtcup(&mut self, handle: u64) -> Result<()> {
        let is_up = |m: &Value| m["janus"] == "webrtcup" && m["sender"] == json!(handle);
        if let Some(i) = self.backlog.iter().position(is_up) {
            self.backlog.remove(i);
            return Ok(());
        }
        let deadline = clock::now() + STEP;
        loop {
            let m = tokio::time::timeout_at(deadline.into(), self.recv())
                .await
                .context("janus: the publisher's connection did not come up")??;
            if is_up(&m) {
                return Ok(());
            }
        }
    }

    async fn attach(&mut self) -> Result<u64> {
        let r = self
            .call(json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}))
            .await?;
        r["data"]["id"].as_u64().context("no handle id")
    }

    async fn message(&mut self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut m = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.call(m).await
    }
}

/// Creates room `FIRST_ROOM + index`; returns its id.
pub async fn create_room(url: &str, index: usize) -> Result<u64> {
    let room = FIRST_ROOM + index as u64;
    let mut c = Client::connect(url).await?;
    let h = c.attach().await?;
    c.message(
        h,
        json!({"request": "create", "room": room, "publishers": 64, "bitrate": 0,
               "fir_freq": 0, "audiocodec": "opus", "videocodec": "vp8",
               "notify_joining": false}),
        None,
    )
    .await
    .with_context(|| format!("creating room {room}"))?;
    let _ = c.ws.close(None).await;
    Ok(room)
}

/// Registers how many publishers each room will have.
pub fn expect_publishers(rooms: &RefCell<HashMap<u64, RoomState>>, room: u64) {
    rooms.borrow_mut().entry(room).or_default().expected += 1;
}

/// Whether a plan publishes anything.
pub fn publishes(plan: &ParticipantPlan) -> bool {
    plan.publish.iter().any(|p| p.sending)
}

/// Runs one participant until the run stops; never fails, reports instead.
pub async fn run_participant(
    url: Rc<String>,
    room: u64,
    rooms: Rc<RefCell<HashMap<u64, RoomState>>>,
    plan: ParticipantPlan,
    ctx: Rc<RunCtx>,
) -> ParticipantReport {
    let mut report = ParticipantReport {
        lesson: plan.lesson,
        pupil: match plan.role {
            Role::Pupil(n) => Some(n),
            Role::Teacher => None,
        },
        join_start_ns: clock::unix_ns(),
        ..ParticipantReport::default()
    };
    if let Err(e) = drive(&url, room, &rooms, &plan, ctx, &mut report).await {
        report.failure.get_or_insert(format!("{e:#}"));
    }
    report
}

async fn drive(
    url: &str,
    room: u64,
    rooms: &RefCell<HashMap<u64, RoomState>>,
    plan: &ParticipantPlan,
    ctx: Rc<RunCtx>,
    report: &mut ParticipantReport,
) -> Result<()> {
    let mut c = Client::connect(url).await?;
    let mut publisher: Option<PeerIo> = None;
    let mut own_feed = None;
    if publishes(plan) {
        let h = c.attach().await?;
        let joined = c
            .message(
                h,
                json!({"request": "join", "ptype": "publisher", "room": room,
                       "display": format!("{:?}", plan.role)}),
                None,
            )
            .await?;
        let feed = joined["plugindata"]["data"]["id"]
            .as_u64()
            .context("joined without a feed id")?;
        own_feed = Some(feed);
        let publish: Vec<Publish> = plan.publish.iter().copied().filter(|p| p.sending).collect();
        let (media, offer) = MediaPeer::new(&PeerConfig {
            publish,
            origin: Origin::Payload,
            bind: self_ip(),
            full: false,
            via: None,
        })
        .await?;
        let offer = offer.context("a publisher offers")?;
        report.tx_keys = media
            .own_mids()
            .iter()
            .map(|mid| format!("{room}/{feed}/{mid}"))
            .collect();
        let io = media.spawn(ctx.clone());
        let answer = c
            .message(
                h,
                json!({"request": "publish", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer})),
            )
            .await?;
        let sdp = answer["jsep"]["sdp"]
            .as_str()
            .context("publish answered without SDP")?
            .to_owned();
        if std::env::var_os("LOADTEST_DEBUG_SDP").is_some() {
            eprintln!("loadtest: janus answer:\n{sdp}");
        }
        let _ = io.sdp_in.send(SigIn::Answer(sdp));
        publisher = Some(io);
        // Subscribers can only ask for a feed whose connection is up.
        c.wait_webrtcup(h).await?;
        rooms.borrow_mut().entry(room).or_default().feeds.push(feed);
    }
    report.admitted_ns = Some(clock::unix_ns());

    // Wait (bounded) until every publisher of the room is up, then
    // subscribe to all of them but oneself in one multistream connection.
    let deadline = clock::now() + STEP;
    let feeds = loop {
        let (expected, feeds) = {
            let r = rooms.borrow();
            let s = r.get(&room);
            (
                s.map_or(0, |s| s.expected),
                s.map(|s| s.feeds.clone()).unwrap_or_default(),
            )
        };
        if feeds.len() >= expected || clock::now() > deadline {
            break feeds;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let others: Vec<Value> = feeds
        .iter()
        .filter(|f| Some(**f) != own_feed)
        .map(|f| json!({"feed": f}))
        .collect();
    let mut subscriber = None;
    if !others.is_empty() {
        let h = c.attach().await?;
        let attached = c
            .message(
                h,
                json!({"request": "join", "ptype": "subscriber", "room": room, "streams": others}),
                None,
            )
            .await?;
        let offer = attached["jsep"]["sdp"]
            .as_str()
            .context("subscription without an offer")?
            .to_owned();
        for s in attached["plugindata"]["data"]["streams"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let (Some(mid), Some(feed), Some(fmid)) = (
                s["mid"].as_str(),
                s["feed_id"].as_u64(),
                s["feed_mid"].as_str(),
            ) {
                report
                    .rx_key_by_mid
                    .insert(mid.to_owned(), format!("{room}/{feed}/{fmid}"));
            }
        }
        let (media, _) = MediaPeer::new(&PeerConfig {
            publish: Vec::new(),
            origin: Origin::Payload,
            bind: self_ip(),
            full: false,
            via: None,
        })
        .await?;
        let mut io = media.spawn(ctx.clone());
        let _ = io.sdp_in.send(SigIn::Offer(offer));
        let answer = tokio::time::timeout(STEP, io.answers.recv())
            .await
            .context("no answer from the media peer")?
            .ok_or_else(|| anyhow!("media peer stopped"))?;
        c.message(
            h,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await?;
        subscriber = Some(io);
    }

    // Keep the session alive until the run stops.
    let mut stop = ctx.stop.clone();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = keepalive.tick() => { c.send(json!({"janus": "keepalive"})).await?; }
            m = c.recv() => { m?; }
        }
        if *stop.borrow() {
            break;
        }
    }
    let _ = c.send(json!({"janus": "destroy"})).await;
    let _ = c.ws.close(None).await;

    // One report for the participant: what it published and what it received.
    if let Some(p) = publisher {
        let m = p.done.await.unwrap_or_default();
        report.media.tx = m.tx;
        report.media.tx_packets_in_window = m.tx_packets_in_window;
        report.media.connected_ns = m.connected_ns;
        if let Some(f) = m.failure {
            bail!("publisher media: {f}");
        }
    }
    if let Some(s) = subscriber {
        let m = s.done.await.unwrap_or_default();
        report.media.first_media_ns = m.first_media_ns;
        report.media.rx = m.rx;
        report.media.samples = m.samples;
        report.media.sections = m.sections;
        report.media.decrypt = m.decrypt;
        report.media.rtx_packets = m.rtx_packets;
        if let Some(f) = m.failure {
            bail!("subscriber media: {f}");
        }
    }
    Ok(())
}
