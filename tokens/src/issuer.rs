//! [`TokenIssuer`]: issuing and verifying this gateway's own tokens.

use chaperone_protocol::{LessonId, UserRef};

use crate::*;

/// Issues and verifies this gateway's tokens.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    /// Our issuer name (the gateway's public URL).
    pub issuer: String,
    /// The audience of room tokens (this gateway).
    pub room_audience: String,
    /// The audience of service tokens (the recorder).
    pub service_audience: String,
    /// Our keys.
    pub keys: KeySet,
}

impl TokenIssuer {
    /// A room token for `user` (called `name`) to join `lesson` with what
    /// `account` vouches for, valid `lifetime` seconds (at most
    /// [`MAX_LIFETIME_SECS`]) from `now`. `jti` must be unguessable (from a
    /// CSPRNG).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_room(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        lesson: LessonId,
        user: UserRef,
        name: String,
        account: AccountClaims,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        let claims = RoomClaims {
            iss: self.issuer.clone(),
            aud: self.room_audience.clone(),
            sub: user.to_string(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: ROOM_TOKEN_TYPE.to_owned(),
            lesson,
            user,
            name,
            account,
        };
        self.keys.sign(ROOM_TOKEN_TYPE, &claims)
    }

    /// A service token for the recorder feed of `lesson`.
    pub fn issue_service(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        lesson: LessonId,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        let claims = ServiceClaims {
            iss: self.issuer.clone(),
            aud: self.service_audience.clone(),
            sub: "gateway".to_owned(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: SERVICE_TOKEN_TYPE.to_owned(),
            lesson,
        };
        self.keys.sign(SERVICE_TOKEN_TYPE, &claims)
    }

    /// A review token (see [`ReviewClaims`]); `claims`' registered fields
    /// are filled in here: issuer, audience `audience`, `now`, `lifetime`
    /// (at most [`MAX_LIFETIME_SECS`]) and `jti` (from a CSPRNG).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_review(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        audience: &str,
        viewer: UserRef,
        name: String,
        role: &str,
        scope: ReviewScope,
        lesson: Option<LessonId>,
        lessons: Vec<LessonId>,
        reason: Option<String>,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        if lessons.len() > MAX_REVIEW_LESSONS
            || reason
                .as_ref()
                .is_some_and(|r| r.chars().count() > MAX_REVIEW_REASON_CHARS)
        {
            return Err(TokenError::Malformed);
        }
        let claims = ReviewClaims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: viewer.to_string(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: REVIEW_TOKEN_TYPE.to_owned(),
            viewer,
            name,
            role: role.to_owned(),
            scope,
            lesson,
            lessons,
            reason,
        };
        self.keys.sign(REVIEW_TOKEN_TYPE, &claims)
    }

    /// Verifies a room token at `now` (Unix seconds). The caller must still
    /// consume its `jti` once for a join.
    pub fn verify_room(&self, now: u64, token: &str) -> Result<RoomClaims, TokenError> {
        self.keys.verifier.verify(
            token,
            ROOM_TOKEN_TYPE,
            &self.issuer,
            &self.room_audience,
            now,
        )
    }

    /// A node token relaying a checked join of `user` to `lesson` from node
    /// `door` to the lesson's owner, valid `lifetime` seconds.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_node(
        &self,
        now: u64,
        lifetime: u64,
        jti: String,
        door: &str,
        lesson: LessonId,
        user: UserRef,
        name: String,
        account: AccountClaims,
    ) -> Result<String, TokenError> {
        if lifetime > MAX_LIFETIME_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        let claims = NodeClaims {
            iss: self.issuer.clone(),
            aud: NODE_AUDIENCE.to_owned(),
            sub: door.to_owned(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti,
            typ: NODE_TOKEN_TYPE.to_owned(),
            lesson,
            user,
            name,
            account,
        };
        self.keys.sign(NODE_TOKEN_TYPE, &claims)
    }

    /// Verifies a node token at `now` (Unix seconds). The caller must still
    /// consume its `jti` once.
    pub fn verify_node(&self, now: u64, token: &str) -> Result<NodeClaims, TokenError> {
        self.keys
            .verifier
            .verify(token, NODE_TOKEN_TYPE, &self.issuer, NODE_AUDIENCE, now)
    }

    /// Verifies a service token at `now` (Unix seconds).
    pub fn verify_service(&self, now: u64, token: &str) -> Result<ServiceClaims, TokenError> {
        self.keys.verifier.verify(
            token,
            SERVICE_TOKEN_TYPE,
            &self.issuer,
            &self.service_audience,
            now,
        )
    }
}

#[cfg(test)]
mod review_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer {
            issuer: "https://gw".into(),
            room_audience: "https://gw".into(),
            service_audience: "chaperone-recorder".into(),
            keys: KeySet::from_seed("k", [3; 32]).unwrap(),
        }
    }

    fn viewer() -> UserRef {
        UserRef::new("https://idp", "slt").unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        t: &TokenIssuer,
        role: &str,
        scope: ReviewScope,
        lesson: Option<LessonId>,
        lessons: Vec<LessonId>,
        reason: Option<&str>,
    ) -> String {
        t.issue_review(
            1000,
            120,
            "j".into(),
            DEFAULT_REVIEW_AUDIENCE,
            viewer(),
            "Mr O".into(),
            role,
            scope,
            lesson,
            lessons,
            reason.map(str::to_owned),
        )
        .unwrap()
    }

    #[test]
    fn review_tokens_round_trip_and_refuse_inconsistent_scopes() {
        let t = issuer();
        let v = t.keys.verifier();
        let l = LessonId::from_bytes([1; 16]);
        let ok = issue(
            &t,
            "slt",
            ReviewScope::Safeguarding,
            Some(l),
            vec![],
            Some("why"),
        );
        let c = v
            .verify_review(1010, &ok, "https://gw", DEFAULT_REVIEW_AUDIENCE)
            .unwrap();
        assert_eq!(
            (c.scope, c.lesson, c.reason.as_deref()),
            (ReviewScope::Safeguarding, Some(l), Some("why"))
        );
        assert_eq!(
            v.verify_review(1010, &ok, "https://gw", "other"),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            v.verify_review(1010 + 200, &ok, "https://gw", DEFAULT_REVIEW_AUDIENCE),
            Err(TokenError::Expired)
        );
        // A room token is not a review token.
        let room = t
            .issue_room(
                1000,
                60,
                "r".into(),
                l,
                viewer(),
                "x".into(),
                AccountClaims::default(),
            )
            .unwrap();
        assert_eq!(
            v.verify_review(1010, &room, "https://gw", DEFAULT_REVIEW_AUDIENCE),
            Err(TokenError::WrongType)
        );
        for bad in [
            issue(&t, "slt", ReviewScope::Safeguarding, Some(l), vec![], None),
            issue(
                &t,
                "pupil",
                ReviewScope::Safeguarding,
                Some(l),
                vec![],
                Some("x"),
            ),
            issue(
                &t,
                "slt",
                ReviewScope::DslRestricted,
                Some(l),
                vec![],
                Some("x"),
            ),
            issue(&t, "slt", ReviewScope::PupilCopy, Some(l), vec![], None),
            issue(&t, "pupil", ReviewScope::PupilCopy, None, vec![], None),
        ] {
            assert_eq!(
                v.verify_review(1010, &bad, "https://gw", DEFAULT_REVIEW_AUDIENCE),
                Err(TokenError::Malformed)
            );
        }
        let list = issue(&t, "pupil", ReviewScope::PupilCopy, None, vec![l], None);
        assert!(
            v.verify_review(1010, &list, "https://gw", DEFAULT_REVIEW_AUDIENCE)
                .is_ok()
        );
    }
}

#[cfg(test)]
mod node_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn issuer(seed: u8) -> TokenIssuer {
        TokenIssuer {
            issuer: "https://gw".into(),
            room_audience: "https://gw".into(),
            service_audience: "recorder".into(),
            keys: KeySet::from_seed("k1", [seed; 32]).unwrap(),
        }
    }

    fn room(issuer: &TokenIssuer) -> RoomClaims {
        let user = UserRef::new("https://idp", "p1").unwrap();
        let token = issuer
            .issue_room(
                1000,
                60,
                "r1".into(),
                LessonId::from_bytes([1; 16]),
                user,
                "P".into(),
                AccountClaims::default(),
            )
            .unwrap();
        issuer.verify_room(1000, &token).unwrap()
    }

    #[test]
    fn a_node_token_carries_the_checked_join_and_nothing_else_passes_for_it() {
        let nodes = issuer(7);
        let room = room(&nodes);
        let node = |issuer: &TokenIssuer, jti: &str| {
            issuer
                .issue_node(
                    1000,
                    30,
                    jti.into(),
                    "node-a",
                    room.lesson,
                    room.user.clone(),
                    room.name.clone(),
                    room.account.clone(),
                )
                .unwrap()
        };
        let token = node(&nodes, "n1");
        let claims = nodes.verify_node(1010, &token).unwrap();
        assert_eq!((claims.lesson, &claims.user), (room.lesson, &room.user));
        assert_eq!(claims.sub, "node-a");
        // Expired (past the leeway), signed by another key, or a room token
        // presented as a node token: refused.
        assert!(
            nodes
                .verify_node(1000 + 30 + LEEWAY_SECS + 1, &token)
                .is_err()
        );
        let forged = node(&issuer(8), "n2");
        assert!(nodes.verify_node(1010, &forged).is_err());
        let room_token = nodes
            .issue_room(
                1000,
                60,
                "r2".into(),
                room.lesson,
                room.user.clone(),
                "P".into(),
                AccountClaims::default(),
            )
            .unwrap();
        assert!(nodes.verify_node(1010, &room_token).is_err());
        // And a node token is no room token.
        assert!(nodes.verify_room(1010, &token).is_err());
    }
}
