//! The people who may try to join a test lesson, what the identity layer
//! vouches for about each, and the lesson's setup. Each [`Who`] is one person
//! with a fixed account; the rule tests and properties rely on exactly who is
//! entitled to what, so an account changed here changes what every test
//! means.

use std::time::Duration;

use chaperone_lesson::{Account, JoinRequest, LessonSetup};
use chaperone_protocol::{LessonId, UserRef};

use super::Class;

/// The class on the lesson's roster.
pub const CLASS: &str = "7B";
/// How long after the start a [`Who::Visitor`]'s grant lasts.
pub const VISITOR_GRANT: Duration = Duration::from_secs(90);
const ISSUER: &str = "https://idp.school.test";

/// The people who may try to join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    /// The lesson's teacher.
    Teacher,
    /// The lesson's assistant.
    Assistant,
    /// The n-th pupil of the class.
    Pupil(usize),
    /// A pupil of another class.
    Outsider,
    /// SLT/DSL with observer rights.
    Observer,
    /// An admin with no observer rights.
    Admin,
    /// A staff member who is not in this lesson's lists.
    OtherStaff,
    /// A visitor whose grant has expired.
    ExpiredVisitor,
    /// A visitor (inspector) whose grant ends 90 s after the lesson starts.
    Visitor,
    /// Someone the school knows nothing about.
    Stranger,
}

pub fn user(who: Who) -> UserRef {
    let subject = match who {
        Who::Teacher => "teacher".to_owned(),
        Who::Assistant => "assistant".to_owned(),
        Who::Pupil(n) => format!("pupil-{n}"),
        Who::Outsider => "outsider".to_owned(),
        Who::Observer => "dsl".to_owned(),
        Who::Admin => "admin".to_owned(),
        Who::OtherStaff => "other-teacher".to_owned(),
        Who::ExpiredVisitor => "inspector".to_owned(),
        Who::Visitor => "visitor".to_owned(),
        Who::Stranger => "stranger".to_owned(),
    };
    UserRef::new(ISSUER, subject).expect("fixed test names are valid")
}

pub fn setup() -> LessonSetup {
    LessonSetup {
        id: LessonId::from_bytes([7; 16]),
        class: CLASS.to_owned(),
        teachers: vec![user(Who::Teacher)],
        assistants: vec![user(Who::Assistant)],
        extra_pupils: Vec::new(),
    }
}

impl Class {
    /// The join request `who` makes now, with the account the identity
    /// layer vouches for.
    pub fn request(&self, who: Who) -> JoinRequest {
        let account = match who {
            Who::Teacher | Who::Assistant | Who::OtherStaff => Account {
                staff: true,
                ..Account::default()
            },
            Who::Pupil(_) => Account {
                pupil_classes: vec![CLASS.to_owned()],
                ..Account::default()
            },
            Who::Outsider => Account {
                pupil_classes: vec!["9Z".to_owned()],
                ..Account::default()
            },
            Who::Observer => Account {
                safeguarding_observer: true,
                ..Account::default()
            },
            Who::ExpiredVisitor => Account {
                visitor_until: Some(self.now()),
                ..Account::default()
            },
            Who::Visitor => Account {
                visitor_until: Some(self.base + VISITOR_GRANT),
                ..Account::default()
            },
            Who::Admin | Who::Stranger => Account::default(),
        };
        JoinRequest {
            user: user(who),
            name: format!("{who:?}"),
            account,
        }
    }
}
