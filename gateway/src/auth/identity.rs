//! Who a signed-in person is at the school, from their ID token's claims:
//! roles through a configured mapping, classes, MFA evidence
//! (docs/security.md §4, §6). Pure: claims and times in, an [`Identity`] or a typed refusal out.
//!
//! A person is `(iss, sub)`; email is never used to identify anyone. A
//! person with no mapped role is refused, and so is anyone holding a staff,
//! SLT, DSL or admin role whose login carries no configured `amr`/`acr`
//! evidence of multi-factor authentication.
//!
//! The one use of an e-mail address: a visitor grant made before the
//! visitor's first sign-in may name their address ([`email_invitation`]).
//! At sign-in the address the provider vouches for ([`verified_email`]:
//! `email` with `email_verified: true`, nothing else) is looked up once,
//! and a grant found there is moved to the person's `(iss, sub)`; from
//! then on it is theirs, as every other grant.

use std::collections::{BTreeMap, BTreeSet};

use chaperone_protocol::UserRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use chaperone_lesson::Account;

/// A role at the school (not in one lesson: the lesson core decides that).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchoolRole {
    /// Teaches lessons.
    Teacher,
    /// Teaching assistant or other classroom staff.
    Assistant,
    /// A pupil.
    Pupil,
    /// Senior leadership.
    Slt,
    /// Designated Safeguarding Lead.
    Dsl,
    /// Administers the service.
    Admin,
    /// An external visitor (e.g. an inspector): nothing without a grant.
    Visitor,
}

impl SchoolRole {
    /// Every role, in display order.
    pub const ALL: [SchoolRole; 7] = [
        SchoolRole::Teacher,
        SchoolRole::Assistant,
        SchoolRole::Pupil,
        SchoolRole::Slt,
        SchoolRole::Dsl,
        SchoolRole::Admin,
        SchoolRole::Visitor,
    ];

    /// Whether holding this role requires MFA evidence at login.
    pub const fn needs_mfa(self) -> bool {
        !matches!(self, SchoolRole::Pupil | SchoolRole::Visitor)
    }

    /// The role's name in configuration and the API.
    pub const fn name(self) -> &'static str {
        match self {
            SchoolRole::Teacher => "teacher",
            SchoolRole::Assistant => "assistant",
            SchoolRole::Pupil => "pupil",
            SchoolRole::Slt => "slt",
            SchoolRole::Dsl => "dsl",
            SchoolRole::Admin => "admin",
            SchoolRole::Visitor => "visitor",
        }
    }
}

/// How claims become roles and classes. `[oidc.claims]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMapping {
    /// The claim holding group or role values (a string or an array of
    /// strings; a dotted path such as `realm_access.roles` reaches into objects).
    pub role_claim: String,
    /// Claim value → school role. A value not listed here gives no role.
    pub roles: BTreeMap<String, SchoolRole>,
    /// The claim holding a pupil's classes (string or array of strings).
    pub class_claim: String,
    /// If not empty, values of `role_claim` starting with this prefix also
    /// name classes (`class:7A` → class `7A`).
    pub class_group_prefix: String,
    /// The claim holding the display name.
    pub name_claim: String,
    /// `amr` values that count as multi-factor authentication.
    pub mfa_amr: Vec<String>,
    /// `acr` values that count as multi-factor authentication.
    pub mfa_acr: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        let roles = [
            ("teachers", SchoolRole::Teacher),
            ("assistants", SchoolRole::Assistant),
            ("pupils", SchoolRole::Pupil),
            ("slt", SchoolRole::Slt),
            ("dsl", SchoolRole::Dsl),
            ("admins", SchoolRole::Admin),
            ("visitors", SchoolRole::Visitor),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            role_claim: "groups".to_owned(),
            roles,
            class_claim: "classes".to_owned(),
            class_group_prefix: String::new(),
            name_claim: "name".to_owned(),
            mfa_amr: vec!["mfa".to_owned()],
            mfa_acr: Vec::new(),
        }
    }
}

/// A signed-in person as the gateway knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `(iss, sub)`.
    pub user: UserRef,
    /// Display name (falls back to the subject).
    pub name: String,
    /// School roles (never empty).
    pub roles: BTreeSet<SchoolRole>,
    /// Classes they belong to as a pupil.
    pub classes: BTreeSet<String>,
    /// Whether the login carried MFA evidence.
    pub mfa: bool,
    /// When they authenticated at the provider, Unix seconds.
    pub auth_time: u64,
}

/// Why a verified login still gets no access.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityRefusal {
    /// No claim value maps to a role.
    #[error("no role at this school is mapped for this account")]
    NoRole,
    /// A staff, SLT, DSL or admin role without MFA evidence.
    #[error("this account needs multi-factor authentication")]
    MfaRequired,
    /// The subject or issuer is empty or too long.
    #[error("the identity provider sent an unusable subject")]
    BadSubject,
}

/// The issuer of the placeholder a visitor grant by e-mail is filed under
/// until someone signs in with that address, verified. It is no URL, so no
/// configured provider's issuer can ever equal it.
pub const EMAIL_INVITATION_ISSUER: &str = "urn:chaperone:email-invitation";

/// Longest e-mail address accepted (RFC 5321's limit on a path).
pub const MAX_EMAIL_LEN: usize = 254;

/// An e-mail address as grants and sign-ins compare it: trimmed and in
/// lower case (providers and people vary the case; nobody relies on it),
/// one `@` with something on each side and a dot in the domain, no
/// spaces or control characters. `None` for anything else.
pub fn normalise_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let fine = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    fine.then_some(email)
}

/// The placeholder person a grant by e-mail is filed under.
pub fn email_invitation(email: &str) -> Option<UserRef> {
    normalise_email(email).and_then(|e| UserRef::new(EMAIL_INVITATION_ISSUER, e).ok())
}

/// The e-mail address the provider vouches for in `claims`: `email`, only
/// when `email_verified` is the boolean `true` (a missing, false or string
/// value vouches for nothing), normalised.
pub fn verified_email(claims: &Map<String, Value>) -> Option<String> {
    if claims.get("email_verified") != Some(&Value::Bool(true)) {
        return None;
    }
    claims
        .get("email")
        .and_then(Value::as_str)
        .and_then(normalise_email)
}

/// Maps the claims of a verified ID token to an identity. `claims` holds
/// every claim of the token (`amr`, `acr`, the name, groups, classes...).
pub fn map_identity(
    mapping: &ClaimMapping,
    issuer: &str,
    subject: &str,
    claims: &Map<String, Value>,
    auth_time: u64,
) -> Result<Identity, IdentityRefusal> {
    let user = UserRef::new(issuer, subject).map_err(|_| IdentityRefusal::BadSubject)?;
    let groups = strings(lookup(claims, &mapping.role_claim));
    let roles: BTreeSet<SchoolRole> = groups
        .iter()
        .filter_map(|g| mapping.roles.get(g).copied())
        .collect();
    if roles.is_empty() {
        return Err(IdentityRefusal::NoRole);
    }
    let amr = strings(claims.get("amr"));
    let acr = strings(claims.get("acr"));
    let mfa = amr.iter().any(|v| mapping.mfa_amr.contains(v))
        || acr.iter().any(|v| mapping.mfa_acr.contains(v));
    if !mfa && roles.iter().any(|r| r.needs_mfa()) {
        return Err(IdentityRefusal::MfaRequired);
    }
    let mut classes: BTreeSet<String> = BTreeSet::new();
    if roles.contains(&SchoolRole::Pupil) {
        classes.extend(strings(lookup(claims, &mapping.class_claim)));
        if !mapping.class_group_prefix.is_empty() {
            classes.extend(
                groups
                    .iter()
                    .filter_map(|g| g.strip_prefix(&mapping.class_group_prefix))
                    .filter(|c| {
                        !c.is_empty() && chaperone_protocol::text::check_display_text(c).is_ok()
                    })
                    .map(str::to_owned),
            );
        }
    }
    let name = strings(lookup(claims, &mapping.name_claim))
        .into_iter()
        .next()
        .map(|n| n.chars().take(100).collect::<String>())
        // A name that could reorder what others read is not shown.
        .filter(|n| !n.trim().is_empty() && chaperone_protocol::text::check_display_text(n).is_ok())
        .unwrap_or_else(|| subject.chars().take(100).collect());
    Ok(Identity {
        user,
        name,
        roles,
        classes,
        mfa,
        auth_time,
    })
}

impl Identity {
    /// Holds `role`.
    pub fn has(&self, role: SchoolRole) -> bool {
        self.roles.contains(&role)
    }

    /// Holds any of `roles`.
    pub fn any(&self, roles: &[SchoolRole]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// Teaching staff: may create lessons and teach them.
    pub fn is_staff(&self) -> bool {
        self.any(&[SchoolRole::Teacher, SchoolRole::Assistant])
    }

    /// May block people and see the audit log.
    pub fn may_block(&self) -> bool {
        self.any(&[SchoolRole::Admin, SchoolRole::Slt, SchoolRole::Dsl])
    }

    /// May grant visitors access.
    pub fn may_grant_visitors(&self) -> bool {
        self.any(&[SchoolRole::Slt, SchoolRole::Dsl])
    }

    /// SLT or DSL: may observe any lesson.
    pub fn is_safeguarding_observer(&self) -> bool {
        self.any(&[SchoolRole::Slt, SchoolRole::Dsl])
    }

    /// The step-up check for replaying recordings: an MFA login no older
    /// than `max_age_secs` at `now` (Unix seconds).
    pub fn step_up_fresh(&self, now: u64, max_age_secs: u64) -> bool {
        self.mfa && self.auth_time <= now + 60 && now.saturating_sub(self.auth_time) <= max_age_secs
    }

    /// What the lesson core is told about them (the visitor window is added
    /// by the caller from the grants).
    pub fn account(&self) -> Account {
        Account {
            staff: self.is_staff(),
            pupil_classes: if self.has(SchoolRole::Pupil) {
                self.classes.iter().cloned().collect()
            } else {
                Vec::new()
            },
            safeguarding_observer: self.is_safeguarding_observer(),
            visitor_until: None,
        }
    }
}

/// A claim by name, or by a dotted path into nested objects.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// A claim that is a string or an array of strings, as strings; anything else is nothing.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn map(v: Value) -> Result<Identity, IdentityRefusal> {
        map_identity(
            &ClaimMapping::default(),
            "https://idp",
            "s1",
            &claims(v),
            1000,
        )
    }

    #[test]
    fn pupils_get_classes_and_need_no_mfa() {
        let id =
            map(json!({"groups": ["pupils"], "classes": ["7A", "7B"], "name": "Ann"})).unwrap();
        assert_eq!(id.roles, BTreeSet::from([SchoolRole::Pupil]));
        assert_eq!(id.classes.len(), 2);
        assert_eq!(id.name, "Ann");
        assert!(!id.mfa);
        assert_eq!(id.account().pupil_classes, vec!["7A", "7B"]);
    }

    #[test]
    fn no_mapped_role_is_refused() {
        assert_eq!(
            map(json!({"groups": ["parents"]})),
            Err(IdentityRefusal::NoRole)
        );
        assert_eq!(map(json!({})), Err(IdentityRefusal::NoRole));
        assert_eq!(map(json!({"groups": 7})), Err(IdentityRefusal::NoRole));
    }

    #[test]
    fn staff_roles_need_mfa_evidence() {
        for g in ["teachers", "assistants", "slt", "dsl", "admins"] {
            assert_eq!(
                map(json!({"groups": [g], "amr": ["pwd"]})),
                Err(IdentityRefusal::MfaRequired),
                "{g}"
            );
            assert!(
                map(json!({"groups": [g], "amr": ["pwd", "mfa"]}))
                    .unwrap()
                    .mfa
            );
        }
        // A pupil who is also staff still needs MFA.
        assert_eq!(
            map(json!({"groups": ["pupils", "teachers"]})),
            Err(IdentityRefusal::MfaRequired)
        );
        // acr evidence when configured.
        let m = ClaimMapping {
            mfa_acr: vec!["urn:mfa".to_owned()],
            ..ClaimMapping::default()
        };
        let c = claims(json!({"groups": ["teachers"], "acr": "urn:mfa"}));
        assert!(map_identity(&m, "i", "s", &c, 0).unwrap().mfa);
    }

    #[test]
    fn classes_from_group_prefix_and_nested_claims() {
        let m = ClaimMapping {
            role_claim: "realm_access.roles".to_owned(),
            class_group_prefix: "class:".to_owned(),
            ..ClaimMapping::default()
        };
        let c = claims(json!({"realm_access": {"roles": ["pupils", "class:8C", "class:"]}}));
        let id = map_identity(&m, "i", "s", &c, 0).unwrap();
        assert_eq!(id.classes, BTreeSet::from(["8C".to_owned()]));
        assert_eq!(id.name, "s");
    }

    #[test]
    fn staff_classes_are_not_pupil_classes() {
        let id = map(json!({"groups": ["teachers"], "classes": ["7A"], "amr": ["mfa"]})).unwrap();
        assert!(id.classes.is_empty());
        assert!(id.account().staff);
        assert!(id.account().pupil_classes.is_empty());
    }

    #[test]
    fn step_up_needs_a_fresh_mfa_login() {
        let id = map(json!({"groups": ["dsl"], "amr": ["mfa"]})).unwrap();
        assert!(id.step_up_fresh(1000 + 600, 900));
        assert!(!id.step_up_fresh(1000 + 901, 900));
        let pupil = map(json!({"groups": ["pupils"]})).unwrap();
        assert!(!pupil.step_up_fresh(1000, 900));
    }

    #[test]
    fn only_a_verified_email_counts() {
        let v = |c: Value| verified_email(&claims(c));
        assert_eq!(
            v(json!({"email": " Ofsted.Inspector@Example.GOV.uk ", "email_verified": true})),
            Some("ofsted.inspector@example.gov.uk".to_owned())
        );
        for unverified in [
            json!({"email": "a@example.org"}),
            json!({"email": "a@example.org", "email_verified": false}),
            json!({"email": "a@example.org", "email_verified": "true"}),
            json!({"email": ["a@example.org"], "email_verified": true}),
            json!({"email_verified": true}),
        ] {
            assert_eq!(v(unverified.clone()), None, "{unverified}");
        }
    }

    #[test]
    fn email_addresses_are_checked_and_filed_apart_from_people() {
        for bad in [
            "",
            "inspector",
            "@example.org",
            "a@b",
            "a@.org",
            "a@example.",
            "a b@example.org",
            "a@b@example.org",
        ] {
            assert_eq!(normalise_email(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalise_email(&format!("{}@example.org", "a".repeat(250))),
            None
        );
        let invite = email_invitation("Inspector@Example.org").unwrap();
        assert_eq!(invite.issuer, EMAIL_INVITATION_ISSUER);
        assert_eq!(invite.subject, "inspector@example.org");
    }

    #[test]
    fn bad_subjects_are_refused() {
        let c = claims(json!({"groups": ["pupils"]}));
        assert_eq!(
            map_identity(&ClaimMapping::default(), "i", "", &c, 0),
            Err(IdentityRefusal::BadSubject)
        );
    }
}
