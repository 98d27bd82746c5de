//! The server under test, whichever it is: started, prepared (lessons or
//! rooms, tokens), and one joiner per planned participant.

use std::rc::Rc;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::gateway::{self, Gateway, Session};
use crate::janus::{self, Janus};
use crate::media::RunCtx;
use crate::plan::{Control, ParticipantPlan, ParticipantReport, Role};
use crate::scenario::{RunOptions, TargetKind};

/// A running server.
#[derive(Debug)]
pub enum Server {
    /// The Chaperone gateway.
    Chaperone(Box<Gateway>),
    /// Janus.
    Janus(Box<Janus>),
}

/// How one participant joins.
#[derive(Debug)]
pub enum Joiner {
    /// Over the gateway's lesson socket with a room token.
    Chaperone {
        /// Gateway base URL.
        base: Rc<String>,
        /// The lesson.
        lesson: Rc<String>,
        /// The participant's room token.
        token: String,
    },
    /// Over Janus's WebSocket API into a VideoRoom.
    Janus {
        /// `ws://127.0.0.1:<port>`.
        url: Rc<String>,
        /// The room.
        room: u64,
        /// What the room's participants know of each other.
        rooms: Rc<std::cell::RefCell<std::collections::HashMap<u64, janus::RoomState>>>,
    },
}

impl Server {
    /// Starts the server of `target`.
    pub fn start(target: &TargetKind, opts: &RunOptions, _scenario: &str) -> Result<Self> {
        Ok(match target {
            TargetKind::Chaperone { bin, recorder } => Server::Chaperone(Box::new(Gateway::start(
                bin,
                recorder.as_deref(),
                opts.server_cpu,
                opts.server_log,
            )?)),
            TargetKind::Janus { bin, config } => Server::Janus(Box::new(Janus::start(
                bin,
                config,
                opts.server_cpu,
                opts.server_log,
            )?)),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Result<u32> {
        match self {
            Server::Chaperone(g) => g.pid(),
            Server::Janus(j) => j.pid(),
        }
    }

    /// The figures of a recorder running apart from it, if any.
    pub async fn recorder_sample(&self) -> Result<Option<crate::recorder::Sample>> {
        match self {
            Server::Chaperone(g) => g.recorder_sample().await,
            Server::Janus(_) => Ok(None),
        }
    }

    /// Fails if it died.
    pub fn check_running(&mut self) -> Result<()> {
        match self {
            Server::Chaperone(g) => g.check_running(),
            Server::Janus(j) => j.check_running(),
        }
    }

    /// The gateway's `/metrics` text (`None` for Janus).
    pub async fn metrics_text(&self) -> Result<Option<String>> {
        match self {
            Server::Chaperone(g) => Ok(Some(g.metrics_text().await?)),
            Server::Janus(_) => Ok(None),
        }
    }

    /// Creates `lessons` lessons (rooms) and a joiner for each plan.
    pub async fn prepare(
        &mut self,
        lessons: usize,
        plans: &[ParticipantPlan],
    ) -> Result<Vec<Joiner>> {
        match self {
            Server::Chaperone(g) => {
                let base = Rc::new(g.base.clone());
                let mut teacher = Session::login(&g.base, "teacher")
                    .await
                    .context("teacher sign-in through the development identity provider")?;
                let mut ids = Vec::new();
                for l in 0..lessons {
                    ids.push(Rc::new(teacher.create_lesson(&format!("Load {l}")).await?));
                }
                let mut out = Vec::new();
                for p in plans {
                    let lesson = ids
                        .get(p.lesson)
                        .context("plan for a lesson not created")?
                        .clone();
                    let token = match p.role {
                        Role::Teacher => teacher.room_token(&lesson).await?,
                        Role::Pupil(n) => g.mint_pupil(&lesson, n)?,
                    };
                    out.push(Joiner::Chaperone {
                        base: base.clone(),
                        lesson,
                        token,
                    });
                }
                Ok(out)
            }
            Server::Janus(j) => {
                let url = Rc::new(j.ws_url());
                let mut rooms = Vec::new();
                for l in 0..lessons {
                    rooms.push(janus::create_room(&url, l).await?);
                }
                let state = j.rooms();
                let mut out = Vec::new();
                for p in plans {
                    let room = *rooms.get(p.lesson).context("plan for a room not created")?;
                    if janus::publishes(p) {
                        janus::expect_publishers(&state, room);
                    }
                    out.push(Joiner::Janus {
                        url: url.clone(),
                        room,
                        rooms: state.clone(),
                    });
                }
                Ok(out)
            }
        }
    }
}

impl Joiner {
    /// Joins and runs the participant until the run stops.
    pub async fn run(
        self,
        plan: ParticipantPlan,
        ctx: Rc<RunCtx>,
        control: Option<mpsc::UnboundedReceiver<Control>>,
    ) -> ParticipantReport {
        match self {
            Joiner::Chaperone {
                base,
                lesson,
                token,
            } => gateway::run_participant(base, lesson, plan, token, ctx, control).await,
            Joiner::Janus { url, room, rooms } => {
                janus::run_participant(url, room, rooms, plan, ctx).await
            }
        }
    }
}
