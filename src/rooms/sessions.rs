//! Sessions: who each connection of this worker is, what it may do, and until when. The
//! token an upgrade carries (or the `auth` op that brings one later), the permissions it
//! grants, the second it expires, the deadline of a connection that must authenticate,
//! and the `auth` rate limit. Room protocol and relay connections alike.
//!
//! Permissions are checked here, on the member's worker, before a request goes to the
//! engine: no permission data travels with a request. No clock reads: the time comes in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use log::debug;

use super::auth::{self, AuthError, Grant, Permissions, TokenVerifier};
use super::error::{close_reason, RoomError};
use super::protocol::Request;
use super::users::UserConnections;
use super::RoomsConfig;
use crate::proto::handshake::UpgradeRequest;
use crate::proto::CloseCode;
use crate::server::{ConnId, Now, Outbox, TokenBucket};

/// What the upgrade said about who the client is, handed from `accept` to `on_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No token (or no authentication configured): `anon_rooms` applies.
    Anonymous,
    /// No token on the upgrade but one is required: `auth` must come first.
    Pending,
    /// A valid token on the upgrade.
    Authenticated(Grant),
}

/// One connection's session.
#[derive(Debug)]
pub struct Session {
    /// The token's `sub`; `None`: anonymous.
    pub user: Option<Arc<str>>,
    /// The `info` claim of the token that named the user (compact JSON). A refresh keeps
    /// it: room engines hold a copy of the identity, which cannot change under them.
    pub info: Option<Arc<str>>,
    /// What it may do.
    pub permissions: Arc<Permissions>,
    /// The last second its token is valid (`exp` + leeway); `None`: anonymous.
    valid_until: Option<u64>,
    /// Set until a valid `auth` arrives (`require_auth`, no token on the upgrade): no
    /// welcome yet, other requests get 401, and at this time the connection is closed.
    auth_deadline: Option<Instant>,
    /// `auth` requests (`auth_per_minute`).
    auths: TokenBucket,
    /// Its user is counted in `max_conns_per_user` (and is uncounted when it closes).
    counted: bool,
}

impl Session {
    /// A connection with a token whose user was at `max_conns_per_user` when it opened
    /// (another worker took the last place after the upgrade's check): to be closed.
    pub fn over_user_limit(&self) -> bool {
        self.user.is_some() && !self.counted
    }

    /// Waiting for a valid `auth` before anything else.
    pub fn is_pending(&self) -> bool {
        self.auth_deadline.is_some()
    }

    /// Checks a request against the session's permissions (-> 403). `leave` and `ping`
    /// need none; `history` reads a room, as joining it does.
    pub fn permits(&self, request: &Request<'_>) -> Result<(), RoomError> {
        let p = &self.permissions;
        let denied = match request {
            Request::Join { room, presence, .. } => {
                if !p.may_join(room) {
                    Some(RoomError::JoinDenied)
                } else if presence.watches() && !p.may_presence(room) {
                    Some(RoomError::PresenceDenied)
                } else {
                    None
                }
            }
            Request::Publish { room, .. } => (!p.may_publish(room)).then_some(RoomError::PublishDenied),
            Request::Presence { room } => (!p.may_presence(room)).then_some(RoomError::PresenceDenied),
            Request::History { room, .. } => (!p.may_join(room)).then_some(RoomError::ReadDenied),
            Request::Leave { .. } | Request::Ping | Request::Auth { .. } => None,
        };
        denied.map_or(Ok(()), Err)
    }
}

/// A successful `auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The session's user now.
    pub user: Arc<str>,
    /// Its `info` (see [`Session::info`]).
    pub info: Option<Arc<str>>,
    /// The connection was waiting for it: it gets its welcome now.
    pub first: bool,
}

/// The sessions of one worker's connections.
#[derive(Debug)]
pub struct Sessions {
    /// Set when authentication is configured.
    verifier: Option<TokenVerifier>,
    require_auth: bool,
    anon: Arc<Permissions>,
    auth_timeout: std::time::Duration,
    auth_per_minute: u32,
    sessions: HashMap<ConnId, Session>,
    /// (valid until, connection): closed with 1008 "token expired" after that second.
    expiries: BTreeSet<(u64, ConnId)>,
    /// (deadline, connection) of connections that have yet to send a valid `auth`.
    auth_deadlines: BTreeSet<(Instant, ConnId)>,
    /// Connections per user, shared with the other workers (`max_conns_per_user`).
    users: Arc<UserConnections>,
    /// This worker's connections of each user (for messages to a user and disconnects).
    by_user: HashMap<Arc<str>, Vec<ConnId>>,
}

impl Sessions {
    /// No sessions yet, under `config`'s authentication settings (users counted by this
    /// worker alone until [`Sessions::sharing_users`]).
    pub fn new(config: &RoomsConfig) -> Self {
        Sessions {
            users: Arc::new(UserConnections::new(config.max_conns_per_user)),
            verifier: config.auth.as_ref().map(TokenVerifier::new),
            require_auth: config.auth.as_ref().is_some_and(|a| a.require_auth),
            anon: Arc::new(Permissions::same_for_all(config.anon_rooms.clone())),
            auth_timeout: config.auth_timeout,
            auth_per_minute: config.auth_per_minute,
            sessions: HashMap::new(),
            expiries: BTreeSet::new(),
            auth_deadlines: BTreeSet::new(),
            by_user: HashMap::new(),
        }
    }

    /// This worker's connections of `user` (room protocol and relay alike).
    pub fn connections_of(&self, user: &str) -> &[ConnId] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// This worker's connections of `user`, which are being closed (`POST /api/disconnect`):
    /// from now on nothing reaches them as that user's, and a second disconnect does not
    /// count them again.
    pub fn disconnect_user(&mut self, user: &str) -> Vec<ConnId> {
        self.by_user.remove(user).unwrap_or_default()
    }

    /// Counts users' connections in `users`, which every worker of the process shares.
    pub fn sharing_users(mut self, users: Arc<UserConnections>) -> Self {
        self.users = users;
        self
    }

    /// Whether `user` may open one more connection (`max_conns_per_user`).
    pub fn user_has_room(&self, user: &str) -> bool {
        self.users.has_room(user)
    }

    /// Verifies the token an upgrade carries, if any, at `now`.
    pub fn admit(&self, request: &UpgradeRequest, now: Now) -> Result<Admission, AuthError> {
        self.admit_token(&request.path, request.authorization.as_deref(), now)
    }

    /// Verifies the token a request carries (`?token=` in `target`, or `Authorization:
    /// Bearer`), if any, at `now`.
    pub fn admit_token(&self, target: &str, authorization: Option<&str>, now: Now) -> Result<Admission, AuthError> {
        let Some(verifier) = &self.verifier else { return Ok(Admission::Anonymous) };
        match auth::upgrade_token(target, authorization)? {
            Some(token) => verifier.verify(&token, now.unix_secs()).map(Admission::Authenticated),
            None if self.require_auth => Ok(Admission::Pending),
            None => Ok(Admission::Anonymous),
        }
    }

    /// The permissions an admission grants.
    pub fn permissions<'a>(&'a self, admission: &'a Admission) -> &'a Arc<Permissions> {
        match admission {
            Admission::Authenticated(grant) => &grant.permissions,
            Admission::Anonymous | Admission::Pending => &self.anon,
        }
    }

    /// Starts the session of a new connection.
    pub fn open(&mut self, conn: ConnId, admission: Admission, now: Now) -> &Session {
        let (user, info, permissions, valid_until, auth_deadline) = match admission {
            Admission::Anonymous => (None, None, self.anon.clone(), None, None),
            Admission::Pending => (None, None, self.anon.clone(), None, Some(now.mono + self.auth_timeout)),
            Admission::Authenticated(grant) => {
                (Some(grant.user), grant.info, grant.permissions, Some(grant.valid_until), None)
            }
        };
        if let Some(deadline) = auth_deadline {
            self.auth_deadlines.insert((deadline, conn));
        }
        if let Some(until) = valid_until {
            self.expiries.insert((until, conn));
        }
        let auths = TokenBucket::full(f64::from(self.auth_per_minute), now.mono);
        let counted = user.as_ref().is_some_and(|user| self.users.add(user));
        // One over `max_conns_per_user` is closed at once: nothing reaches it meanwhile.
        if let (Some(user), true) = (&user, counted) {
            self.by_user.entry(user.clone()).or_default().push(conn);
        }
        let session = Session { user, info, permissions, valid_until, auth_deadline, auths, counted };
        self.sessions.entry(conn).or_insert(session)
    }

    /// The session of `conn`.
    pub fn get(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(&conn)
    }

    /// Ends the session of a closed connection.
    pub fn close(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.remove(&conn) else { return };
        if let (true, Some(user)) = (session.counted, &session.user) {
            self.users.remove(user);
        }
        if let Some(user) = &session.user {
            // (Gone already when the connection was disconnected as its user's.)
            if let Some(conns) = self.by_user.get_mut(user) {
                conns.retain(|&c| c != conn);
                if conns.is_empty() {
                    self.by_user.remove(user);
                }
            }
        }
        if let Some(until) = session.valid_until {
            self.expiries.remove(&(until, conn));
        }
        if let Some(deadline) = session.auth_deadline {
            self.auth_deadlines.remove(&(deadline, conn));
        }
    }

    /// The `auth` request: a first valid token names a waiting connection (or an
    /// anonymous one in no rooms yet); a later one for the same user extends the session.
    /// `rooms` are the rooms the connection is in or joining.
    pub fn authenticate(
        &mut self,
        conn: ConnId,
        token: &str,
        rooms: &[&str],
        now: Now,
    ) -> Result<Authenticated, RoomError> {
        let Some(verifier) = &self.verifier else { return Err(RoomError::AuthNotConfigured) };
        let Some(session) = self.sessions.get_mut(&conn) else { return Err(RoomError::AuthenticateFirst) };
        let per_minute = f64::from(self.auth_per_minute);
        if session.auths.take(per_minute / 60.0, per_minute, now.mono).is_err() {
            return Err(RoomError::AuthRate);
        }
        let grant = verifier.verify(token, now.unix_secs()).map_err(RoomError::Token)?;
        match &session.user {
            Some(user) if *user != grant.user => return Err(RoomError::AnotherUser),
            // Room engines hold a copy of the identity: it cannot change under them.
            None if !rooms.is_empty() => return Err(RoomError::AuthAfterJoin),
            // A refresh may not narrow the rooms under a session that is in them: its
            // rooms keep delivering (and showing presence) whatever the new claim says.
            Some(_) if !covers(&grant.permissions, &session.permissions, rooms) => return Err(RoomError::TokenNarrows),
            _ => {}
        }
        // The first token naming the connection's user: one more connection of theirs.
        if session.user.is_none() {
            if !self.users.add(&grant.user) {
                return Err(RoomError::TooManyUserConnections);
            }
            session.counted = true;
        }
        let waiting = session.auth_deadline.take();
        if let Some(deadline) = waiting {
            self.auth_deadlines.remove(&(deadline, conn));
        }
        if let Some(old) = session.valid_until.replace(grant.valid_until) {
            self.expiries.remove(&(old, conn));
        }
        self.expiries.insert((grant.valid_until, conn));
        session.permissions = grant.permissions;
        if session.user.is_none() {
            session.info = grant.info;
            self.by_user.entry(grant.user.clone()).or_default().push(conn);
        }
        session.user = Some(grant.user.clone());
        Ok(Authenticated { user: grant.user, info: session.info.clone(), first: waiting.is_some() })
    }

    /// Closes connections whose token expired, and those that did not authenticate in
    /// time (1008).
    pub fn enforce(&mut self, out: &mut Outbox) {
        if self.verifier.is_none() {
            return;
        }
        let now = out.now();
        while let Some(&(until, conn)) = self.expiries.first() {
            if until >= now.unix_secs() {
                break;
            }
            self.expiries.pop_first();
            debug!("closing {conn:?}: token expired");
            out.close(conn, CloseCode::POLICY_VIOLATION, close_reason::TOKEN_EXPIRED);
        }
        while let Some(&(deadline, conn)) = self.auth_deadlines.first() {
            if deadline > now.mono {
                break;
            }
            self.auth_deadlines.pop_first();
            debug!("closing {conn:?}: no valid auth in time");
            out.close(conn, CloseCode::POLICY_VIOLATION, close_reason::AUTH_REQUIRED);
        }
    }
}

/// Whether `new` permissions allow staying in every room a session is in or joining:
/// joining it, and watching its presence where `old` allowed that (the client may have
/// joined with presence).
fn covers(new: &Permissions, old: &Permissions, rooms: &[&str]) -> bool {
    rooms.iter().all(|room| new.may_join(room) && (new.may_presence(room) || !old.may_presence(room)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::rooms::auth::AuthConfig;
    use crate::server::Command;

    const SECRET: &[u8] = b"test secret of enough length....";
    /// 2027-01-15, the tests' wall clock.
    const T0: u64 = 1_800_000_000;

    fn sessions(require_auth: bool) -> Sessions {
        let mut auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
        auth.require_auth = require_auth;
        Sessions::new(&RoomsConfig {
            auth: Some(auth),
            auth_timeout: Duration::from_secs(10),
            ..RoomsConfig::default()
        })
    }

    fn token(sub: &str, exp: u64) -> String {
        encode(&Header::default(), &json!({"sub": sub, "exp": exp}), &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn grant(sessions: &Sessions, sub: &str, exp: u64) -> Admission {
        let verifier = sessions.verifier.as_ref().unwrap();
        Admission::Authenticated(verifier.verify(&token(sub, exp), T0).unwrap())
    }

    /// Time `secs` after the start, on both clocks.
    fn at(start: Now, secs: u64) -> Now {
        start.after(Duration::from_secs(secs))
    }

    /// The connections `enforce` closes at `now`, with their reasons.
    fn closed_at(sessions: &mut Sessions, now: Now) -> Vec<(ConnId, String)> {
        let mut out = Outbox::new(now);
        sessions.enforce(&mut out);
        out.take()
            .into_iter()
            .map(|c| match c {
                Command::Close(conn, code, reason) => {
                    assert_eq!(code, CloseCode::POLICY_VIOLATION);
                    (conn, reason)
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn start() -> Now {
        Now { mono: Now::read().mono, unix: Duration::from_secs(T0) }
    }

    #[test]
    fn a_session_is_closed_in_the_first_second_after_its_token_expires() {
        let (start, conn) = (start(), ConnId::from_parts(1, 0));
        let mut sessions = sessions(false);
        let admission = grant(&sessions, "ann", T0 + 100);
        sessions.open(conn, admission, start);
        assert_eq!(closed_at(&mut sessions, at(start, 100)), [], "valid through its exp second");
        assert_eq!(closed_at(&mut sessions, at(start, 101)), [(conn, "token expired".to_owned())]);
        assert_eq!(closed_at(&mut sessions, at(start, 102)), [], "closed once");
    }

    #[test]
    fn a_connection_over_the_users_limit_is_marked_and_not_counted() {
        let start = start();
        let users = Arc::new(UserConnections::new(1));
        // Two workers' sessions share the count, as `Rooms::build` wires them.
        let mut one = sessions(false).sharing_users(users.clone());
        let mut two = sessions(false).sharing_users(users.clone());
        let (a, b) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        let admission = grant(&one, "ann", T0 + 60);
        assert!(!one.open(a, admission, start).over_user_limit());
        // Both upgrades passed the check before either opened: the second one loses.
        let admission = grant(&two, "ann", T0 + 60);
        assert!(two.open(b, admission, start).over_user_limit());
        two.close(b);
        assert_eq!(users.count("ann"), 1, "closing the refused one frees nothing");
        one.close(a);
        assert_eq!(users.count("ann"), 0);
    }

    #[test]
    fn a_refreshed_token_extends_the_session_and_another_user_is_refused() {
        let (start, conn) = (start(), ConnId::from_parts(1, 0));
        let mut sessions = sessions(false);
        let admission = grant(&sessions, "gina", T0 + 2);
        sessions.open(conn, admission, start);
        let refreshed = sessions.authenticate(conn, &token("gina", T0 + 60), &["r"], at(start, 1));
        assert_eq!(refreshed, Ok(Authenticated { user: "gina".into(), info: None, first: false }));
        let other = sessions.authenticate(conn, &token("mallory", T0 + 60), &["r"], at(start, 1));
        assert_eq!(other, Err(RoomError::AnotherUser));
        assert_eq!(closed_at(&mut sessions, at(start, 3)), [], "past the first token's exp: still open");
        assert_eq!(sessions.get(conn).and_then(|s| s.user.clone()).as_deref(), Some("gina"));
        assert_eq!(closed_at(&mut sessions, at(start, 61)), [(conn, "token expired".to_owned())]);
    }

    #[test]
    fn a_pending_connection_has_until_its_deadline_to_authenticate() {
        let start = start();
        let (late, prompt) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        let mut sessions = sessions(true);
        assert!(sessions.open(late, Admission::Pending, start).is_pending());
        sessions.open(prompt, Admission::Pending, start);
        let done = sessions.authenticate(prompt, &token("pat", T0 + 60), &[], at(start, 9));
        assert_eq!(done, Ok(Authenticated { user: "pat".into(), info: None, first: true }));
        assert_eq!(closed_at(&mut sessions, start.after(Duration::from_millis(9_999))), []);
        assert_eq!(closed_at(&mut sessions, at(start, 10)), [(late, "authentication required".to_owned())]);
    }

    #[test]
    fn an_expired_token_is_refused_by_the_time_passed_in() {
        let (start, conn) = (start(), ConnId::from_parts(1, 0));
        let mut sessions = sessions(false);
        sessions.open(conn, Admission::Anonymous, start);
        let late = at(start, 3_600);
        let refused = sessions.authenticate(conn, &token("ann", T0 + 60), &[], late);
        assert_eq!(refused, Err(RoomError::Token(AuthError::Expired)));
        assert_eq!(sessions.authenticate(conn, &token("ann", T0 + 7_200), &[], late).map(|a| a.first), Ok(false));
    }
}
