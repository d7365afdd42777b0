//! Who a connection is and what it may do: JWT verification (the `jsonwebtoken` crate) and
//! the room permission model (`rooms` claim patterns, and the default for anonymous users).
//!
//! No IO, no clock: verification takes the time as seconds since the Unix epoch (the
//! event loop reads it once per turn, `server::Now`). A token never appears in an error
//! message: errors name what was wrong, not what was sent.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Longest `sub` accepted (it is copied into every message a user publishes).
pub const MAX_USER_BYTES: usize = 256;

/// Longest `info` claim accepted, as compact JSON (it is copied into every message a user
/// publishes and every presence entry).
pub const MAX_INFO_BYTES: usize = 1024;

/// True when `room` matches `pattern` (for fuzz targets and tests: see [`matches`]).
#[cfg(any(test, feature = "fuzzing"))]
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    matches(pattern, room)
}

/// True when `room` matches `pattern`: an exact name, or a prefix ending in `*` (`*` alone
/// matches every room). Allocation-free: it runs on every join and publish.
fn matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// A list of room patterns; a room is allowed when any of them matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomPatterns(Box<[Box<str>]>);

impl RoomPatterns {
    /// These patterns (an exact room name, or a prefix ending in `*`).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        RoomPatterns(patterns.iter().map(|p| p.as_ref().into()).collect())
    }

    /// Every room (`*`).
    pub fn everything() -> Self {
        RoomPatterns::new(&["*"])
    }

    /// Whether any pattern matches `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| matches(p, room))
    }
}

/// What a connection may do, per room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Rooms it may join (and read with `history`).
    pub join: RoomPatterns,
    /// Rooms it may publish to.
    pub publish: RoomPatterns,
    /// The `presence` request, and `join` with `presence: true`.
    pub presence: RoomPatterns,
}

impl Permissions {
    /// Everything everywhere: a token without a `rooms` claim, or no authentication at all.
    pub fn everything() -> Self {
        Permissions::same_for_all(RoomPatterns::everything())
    }

    /// The same patterns for join, publish and presence (`--anon-rooms`).
    pub fn same_for_all(patterns: RoomPatterns) -> Self {
        Permissions { join: patterns.clone(), publish: patterns.clone(), presence: patterns }
    }

    /// May join (and read) `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.join.allows(room)
    }

    /// May publish to `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        self.publish.allows(room)
    }

    /// May watch presence in `room`.
    pub fn may_presence(&self, room: &str) -> bool {
        self.presence.allows(room)
    }
}

/// The claims wsedge reads; others are ignored (`aud` and `iss` are checked by
/// `jsonwebtoken`'s `Validation`).
#[derive(Debug, Deserialize)]
struct Claims {
    // Options, so that a missing one is reported as missing (by `Validation`), not malformed.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    nbf: Option<u64>,
    // `"rooms": null` is malformed, not "no claim": a backend writing null for "no rooms"
    // must not hand out every room.
    #[serde(default, deserialize_with = "present")]
    rooms: Option<RoomsClaim>,
    // Any JSON here, null included; `verify` requires an object (a clearer reason than
    // "malformed").
    #[serde(default, deserialize_with = "present")]
    info: Option<serde_json::Value>,
}

/// An optional field that, when present, must hold a `T` (null included in "not a `T`").
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `rooms`: `{"join": [patterns], "publish": [patterns], "presence": [patterns]}`. A list
/// left out allows nothing (the claim narrows; a token without it allows everything).
#[derive(Debug, Deserialize)]
struct RoomsClaim {
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    presence: Vec<String>,
}

/// RFC 7519 §2: a NumericDate may have a fraction; whole seconds are enough here.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let seconds = f64::deserialize(d)?;
    if !(0.0..=u64::MAX as f64).contains(&seconds) {
        return Err(serde::de::Error::custom("NumericDate out of range"));
    }
    Ok(seconds as u64)
}

fn optional_numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    numeric_date(d).map(Some)
}

/// Why a token was refused (HTTP 401 on the upgrade, error 401 to `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not three base64url parts of JSON, or claims of the wrong type.
    Malformed,
    /// `alg` is not one the server is configured for (`none` included).
    WrongAlgorithm,
    /// The signature does not verify with the key of its `alg`.
    BadSignature,
    /// `exp` (plus leeway) has passed.
    Expired,
    /// `nbf` (minus leeway) has not come yet.
    NotYetValid,
    /// `aud` is none of the accepted audiences.
    WrongAudience,
    /// `iss` is not the required issuer.
    WrongIssuer,
    /// `sub`, `exp` (or a configured `aud`/`iss`) missing.
    MissingClaim,
    /// `sub` empty or over [`MAX_USER_BYTES`].
    BadSubject,
    /// `info` not a JSON object, or over [`MAX_INFO_BYTES`] as compact JSON.
    BadInfo,
    /// A token is required and none came (the relay, which has no `auth` op).
    MissingToken,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Malformed => "invalid token: malformed",
            AuthError::WrongAlgorithm => "invalid token: algorithm not accepted",
            AuthError::BadSignature => "invalid token: bad signature",
            AuthError::Expired => "invalid token: expired",
            AuthError::NotYetValid => "invalid token: not yet valid",
            AuthError::WrongAudience => "invalid token: wrong audience",
            AuthError::WrongIssuer => "invalid token: wrong issuer",
            AuthError::MissingClaim => "invalid token: a required claim is missing",
            AuthError::BadSubject => "invalid token: sub must be 1-256 bytes",
            AuthError::BadInfo => "invalid token: info must be a JSON object of at most 1024 bytes",
            AuthError::MissingToken => "a token is required (Authorization: Bearer, or ?token=)",
        })
    }
}

impl std::error::Error for AuthError {}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                AuthError::WrongAlgorithm
            }
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
            _ => AuthError::Malformed,
        }
    }
}

/// A configuration that cannot work (reported at startup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSetupError(pub String);

impl fmt::Display for AuthSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthSetupError {}

/// The shortest `--jwt-secret` accepted, in bytes: 256 bits, HS256's hash size.
pub const MIN_HS256_SECRET: usize = 32;

/// Token authentication settings: the verification keys and what a valid token must say.
/// The default has no keys (`with_hs256_secret`, `with_public_key_pem` add them).
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Keys by the one algorithm each accepts: HS256 (`--jwt-secret`), RS256 or ES256
    /// (`--jwt-public-key`). A token's `alg` picks the key, so an RSA public key can never
    /// be used as an HMAC secret.
    keys: Vec<(Algorithm, Arc<DecodingKey>)>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (jsonwebtoken's default is 60).
    pub leeway: u64,
    /// Accepted `aud` values (empty: `aud` is not checked).
    pub audience: Vec<String>,
    /// The required `iss` (`None`: not checked).
    pub issuer: Option<String>,
    /// Connections without a token on the upgrade must send `auth` before anything else.
    pub require_auth: bool,
}

impl fmt::Debug for AuthConfig {
    // The keys stay out of debug output (the HS256 secret is a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithms", &self.algorithms())
            .field("leeway", &self.leeway)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("require_auth", &self.require_auth)
            .finish()
    }
}

impl AuthConfig {
    /// Accepts HS256 tokens signed with `secret`.
    pub fn with_hs256_secret(mut self, secret: &[u8]) -> Result<Self, AuthSetupError> {
        // RFC 7518 §3.2: an HS256 key of at least the hash's size. A shorter secret can be
        // guessed offline from any one token a client holds.
        if secret.len() < MIN_HS256_SECRET {
            return Err(AuthSetupError(format!(
                "the JWT secret is {} bytes; HS256 needs at least {MIN_HS256_SECRET} (RFC 7518 §3.2), \
                 e.g. `openssl rand -base64 32`",
                secret.len()
            )));
        }
        self.keys.retain(|(alg, _)| *alg != Algorithm::HS256);
        self.keys.push((Algorithm::HS256, Arc::new(DecodingKey::from_secret(secret))));
        Ok(self)
    }

    /// Accepts tokens signed with the private half of `pem`: RS256 for an RSA public key,
    /// ES256 for a P-256 one (PEM: `PUBLIC KEY`, `RSA PUBLIC KEY` or a certificate).
    pub fn with_public_key_pem(mut self, pem: &[u8]) -> Result<Self, AuthSetupError> {
        let (alg, key) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (Algorithm::ES256, key),
                Err(e) => return Err(AuthSetupError(format!("not an RSA or EC public key in PEM: {e}"))),
            },
        };
        self.keys.retain(|(a, _)| !matches!(a, Algorithm::RS256 | Algorithm::ES256));
        self.keys.push((alg, Arc::new(key)));
        Ok(self)
    }

    /// The algorithms tokens may use.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.keys.iter().map(|(alg, _)| *alg).collect()
    }

    /// Whether any key is configured (without one no token can be valid).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `sub`: the connection's `user`.
    pub user: Arc<str>,
    /// The `info` claim as compact JSON (an object): shown with the user wherever its
    /// identity is (welcome, presence, a message's `from`).
    pub info: Option<Arc<str>>,
    /// `exp` plus the leeway: the session ends after this second.
    pub valid_until: u64,
    /// What it may do (its `rooms` claim; everything without one).
    pub permissions: Arc<Permissions>,
}

/// Verifies tokens against an [`AuthConfig`]; one per worker, built once.
#[derive(Debug)]
pub struct TokenVerifier {
    leeway: u64,
    /// Per accepted algorithm: its key and a `Validation` that accepts exactly it.
    keys: Vec<(Algorithm, Arc<DecodingKey>, Validation)>,
    everything: Arc<Permissions>,
}

impl TokenVerifier {
    /// A verifier for `config`'s keys and claims.
    pub fn new(config: &AuthConfig) -> Self {
        let keys = config
            .keys
            .iter()
            .map(|(alg, key)| {
                let mut validation = Validation::new(*alg);
                validation.algorithms = vec![*alg];
                validation.leeway = config.leeway;
                // `exp` and `nbf` are checked in `verify` against the time passed in.
                validation.validate_exp = false;
                validation.validate_nbf = false;
                let mut required = vec!["exp", "sub"];
                if config.audience.is_empty() {
                    validation.validate_aud = false;
                } else {
                    validation.set_audience(&config.audience);
                    required.push("aud");
                }
                if let Some(issuer) = &config.issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                validation.set_required_spec_claims(&required);
                (*alg, key.clone(), validation)
            })
            .collect();
        TokenVerifier { leeway: config.leeway, keys, everything: Arc::new(Permissions::everything()) }
    }

    /// Checks `token` at `now` (seconds since the Unix epoch): signature with the key of its
    /// `alg`, then `exp`, `nbf`, `aud`, `iss`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Grant, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match header_alg(token) {
            // An algorithm jsonwebtoken does not know, such as `none`.
            Some(_) => AuthError::WrongAlgorithm,
            None => AuthError::from(e),
        })?;
        let Some((_, key, validation)) = self.keys.iter().find(|(alg, _, _)| *alg == header.alg) else {
            return Err(AuthError::WrongAlgorithm);
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)?.claims;
        let (Some(sub), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(AuthError::MissingClaim);
        };
        // RFC 7519 §4.1.4/§4.1.5, with jsonwebtoken's reading of the leeway.
        if exp < now.saturating_sub(self.leeway) {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(AuthError::NotYetValid);
        }
        if sub.is_empty() || sub.len() > MAX_USER_BYTES {
            return Err(AuthError::BadSubject);
        }
        let info = match claims.info {
            None => None,
            Some(info) if info.is_object() => {
                let text = info.to_string();
                if text.len() > MAX_INFO_BYTES {
                    return Err(AuthError::BadInfo);
                }
                Some(Arc::from(text))
            }
            Some(_) => return Err(AuthError::BadInfo),
        };
        let permissions = match claims.rooms {
            None => self.everything.clone(),
            Some(rooms) => Arc::new(Permissions {
                join: RoomPatterns::new(&rooms.join),
                publish: RoomPatterns::new(&rooms.publish),
                presence: RoomPatterns::new(&rooms.presence),
            }),
        };
        Ok(Grant { user: sub.into(), info, valid_until: exp.saturating_add(self.leeway), permissions })
    }
}

/// The `alg` a token's header names, whatever it is (for telling an unknown algorithm from
/// garbage).
fn header_alg(token: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
    }
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    serde_json::from_slice::<RawHeader>(&header).ok().map(|h| h.alg)
}

/// The token an upgrade request carries: `Authorization: Bearer` first, else `?token=` in
/// the URL (percent-decoded). `Err` for a `token` parameter that is not valid
/// percent-encoded UTF-8 (an invalid token, like any other).
pub fn upgrade_token(path: &str, authorization: Option<&str>) -> Result<Option<String>, AuthError> {
    if let Some((scheme, token)) = authorization.and_then(|h| h.trim().split_once(' ')) {
        // RFC 9110 §11.1: the scheme name is case-insensitive. Other schemes are not ours.
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Some(token.trim().to_owned()));
        }
    }
    crate::server::http::query_param(path, "token").transpose().map_err(|()| AuthError::Malformed)
}

/// Checks that patterns given on the command line are patterns (startup errors).
pub fn parse_patterns(patterns: &[String]) -> Result<RoomPatterns, AuthSetupError> {
    for p in patterns {
        let name = p.strip_suffix('*').unwrap_or(p);
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if !valid || (name.is_empty() && p.is_empty()) {
            return Err(AuthSetupError(format!(
                "room pattern {p:?}: expected a room name, or a prefix of one ending in *"
            )));
        }
    }
    Ok(RoomPatterns::new(patterns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"test secret of enough length....";
    const NOW: u64 = 1_800_000_000;

    fn verifier(edit: impl FnOnce(&mut AuthConfig)) -> TokenVerifier {
        let mut config = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
        edit(&mut config);
        TokenVerifier::new(&config)
    }

    fn sign(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn patterns_match_exact_names_and_star_prefixes() {
        assert!(pattern_matches("lobby", "lobby"));
        assert!(!pattern_matches("lobby", "lobby2"));
        assert!(!pattern_matches("lobby", "lob"));
        assert!(pattern_matches("chat:*", "chat:1"));
        assert!(pattern_matches("chat:*", "chat:"));
        assert!(!pattern_matches("chat:*", "chat"));
        assert!(!pattern_matches("chat:*", "news:1"));
        assert!(pattern_matches("*", "anything"));
        assert!(!pattern_matches("", "a"));
        // A star anywhere but at the end is a literal character, which no room name has.
        assert!(!pattern_matches("a*b", "axb"));
        let list = RoomPatterns::new(&["a", "b:*"]);
        assert!(list.allows("a") && list.allows("b:x") && !list.allows("c"));
        assert!(!RoomPatterns::default().allows("a"), "no patterns: nothing");
    }

    #[test]
    fn the_info_claim_is_an_object_of_at_most_1_kib_kept_compact() {
        let v = verifier(|_| {});
        let with = |info: serde_json::Value| v.verify(&sign(json!({"sub": "ann", "exp": NOW + 9, "info": info})), NOW);
        let grant = with(json!({"name": "Ann", "avatar": "/a.png"})).unwrap();
        assert_eq!(grant.info.as_deref(), Some(r#"{"avatar":"/a.png","name":"Ann"}"#));
        assert_eq!(v.verify(&sign(json!({"sub": "ann", "exp": NOW + 9})), NOW).unwrap().info, None);
        let fits = "x".repeat(MAX_INFO_BYTES - r#"{"n":""}"#.len());
        assert!(with(json!({ "n": fits })).is_ok(), "exactly 1024 bytes");
        // null too: a backend writing null for "no info" gets told, not silently ignored.
        for bad in [json!({ "n": format!("{fits}x") }), json!("Ann"), json!(["Ann"]), json!(7), json!(null)] {
            assert_eq!(with(bad.clone()).map(|_| ()), Err(AuthError::BadInfo), "info: {bad}");
        }
        assert!(AuthError::BadInfo.to_string().contains("info must be a JSON object of at most 1024 bytes"));
    }

    #[test]
    fn a_valid_token_grants_its_rooms_claim() {
        let v = verifier(|_| {});
        let token =
            sign(json!({"sub": "alice", "exp": NOW + 60, "rooms": {"join": ["chat:*"], "publish": ["chat:1"]}}));
        let grant = v.verify(&token, NOW).unwrap();
        assert_eq!(&*grant.user, "alice");
        assert_eq!(grant.valid_until, NOW + 60);
        let p = &grant.permissions;
        assert!(p.may_join("chat:2") && p.may_publish("chat:1"));
        assert!(!p.may_publish("chat:2"), "not in publish");
        assert!(!p.may_presence("chat:1"), "a list left out allows nothing");
        let all = v.verify(&sign(json!({"sub": "bob", "exp": NOW + 1})), NOW).unwrap();
        assert_eq!(*all.permissions, Permissions::everything(), "no rooms claim: everything");
        // A null claim or list fails closed: the token is refused, not granted everything.
        for rooms in [json!(null), json!({"join": null}), json!("chat:*"), json!({"join": "chat:*"})] {
            let token = sign(json!({"sub": "eve", "exp": NOW + 1, "rooms": rooms}));
            assert_eq!(v.verify(&token, NOW).map(|_| ()), Err(AuthError::Malformed), "rooms: {rooms}");
        }
    }

    #[test]
    fn time_claims_are_checked_against_the_time_given_with_the_leeway() {
        let v = verifier(|_| {});
        let expired = sign(json!({"sub": "a", "exp": NOW - 1}));
        assert_eq!(v.verify(&expired, NOW), Err(AuthError::Expired));
        assert!(v.verify(&sign(json!({"sub": "a", "exp": NOW})), NOW).is_ok(), "valid through its exp second");
        let early = sign(json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 10}));
        assert_eq!(v.verify(&early, NOW), Err(AuthError::NotYetValid));
        assert!(v.verify(&early, NOW + 10).is_ok());
        let lenient = verifier(|c| c.leeway = 5);
        assert!(lenient.verify(&expired, NOW + 4).is_ok());
        assert_eq!(lenient.verify(&expired, NOW + 5), Err(AuthError::Expired));
        assert!(lenient.verify(&early, NOW + 5).is_ok());
        assert_eq!(lenient.verify(&sign(json!({"sub": "a", "exp": NOW})), NOW).unwrap().valid_until, NOW + 5);
        assert_eq!(v.verify(&sign(json!({"sub": "a", "exp": 1.8e9 + 0.5})), NOW).map(|g| g.valid_until), Ok(NOW));
    }

    #[test]
    fn required_claims_audience_and_issuer() {
        let v = verifier(|c| {
            c.audience = vec!["wsedge".into(), "other".into()];
            c.issuer = Some("backend".into());
        });
        let ok = json!({"sub": "a", "exp": NOW + 9, "aud": "wsedge", "iss": "backend"});
        assert!(v.verify(&sign(ok), NOW).is_ok());
        let many = json!({"sub": "a", "exp": NOW + 9, "aud": ["x", "other"], "iss": "backend"});
        assert!(v.verify(&sign(many), NOW).is_ok());
        for (claims, error) in [
            (json!({"sub": "a", "exp": NOW + 9, "aud": "nope", "iss": "backend"}), AuthError::WrongAudience),
            (json!({"sub": "a", "exp": NOW + 9, "iss": "backend"}), AuthError::MissingClaim),
            (json!({"sub": "a", "exp": NOW + 9, "aud": "wsedge", "iss": "evil"}), AuthError::WrongIssuer),
            (json!({"sub": "a", "exp": NOW + 9, "aud": "wsedge"}), AuthError::MissingClaim),
            (json!({"exp": NOW + 9, "aud": "wsedge", "iss": "backend"}), AuthError::MissingClaim),
            (json!({"sub": "a", "aud": "wsedge", "iss": "backend"}), AuthError::MissingClaim),
            (json!({"sub": "", "exp": NOW + 9, "aud": "wsedge", "iss": "backend"}), AuthError::BadSubject),
            (json!({"sub": 5, "exp": NOW + 9, "aud": "wsedge", "iss": "backend"}), AuthError::Malformed),
            (json!({"sub": "a", "exp": "soon", "aud": "wsedge", "iss": "backend"}), AuthError::Malformed),
        ] {
            assert_eq!(v.verify(&sign(claims.clone()), NOW), Err(error), "{claims}");
        }
    }

    #[test]
    fn forged_unsigned_and_other_algorithm_tokens_are_refused() {
        let v = verifier(|_| {});
        let claims = json!({"sub": "a", "exp": NOW + 9});
        let forged = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"guess")).unwrap();
        assert_eq!(v.verify(&forged, NOW), Err(AuthError::BadSignature));
        // `alg: none` cannot even be written with jsonwebtoken: craft it by hand.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine;
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), B64.encode(claims.to_string()));
        assert_eq!(v.verify(&none, NOW), Err(AuthError::WrongAlgorithm));
        let hs384 = encode(&Header::new(Algorithm::HS384), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(v.verify(&hs384, NOW), Err(AuthError::WrongAlgorithm));
        for garbage in ["", "a", "a.b", "a.b.c", "..", "\u{0}.\u{0}.\u{0}"] {
            assert!(v.verify(garbage, NOW).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn upgrade_tokens_come_from_bearer_or_the_query() {
        assert_eq!(upgrade_token("/ws", None), Ok(None));
        assert_eq!(upgrade_token("/ws?x=1&token=a.b%2Ec", None), Ok(Some("a.b.c".into())));
        assert_eq!(upgrade_token("/ws?token=q", Some("Bearer h")), Ok(Some("h".into())), "the header wins");
        assert_eq!(upgrade_token("/ws?token=q", Some("Basic h")), Ok(Some("q".into())), "not our scheme");
        assert_eq!(upgrade_token("/ws", Some("bearer  h ")), Ok(Some("h".into())));
        assert_eq!(upgrade_token("/ws?token=%zz", None), Err(AuthError::Malformed));
        assert_eq!(upgrade_token("/ws?token=%ff", None), Err(AuthError::Malformed));
        assert_eq!(upgrade_token("/ws?tokens=a", None), Ok(None));
    }

    #[test]
    fn command_line_patterns_are_checked() {
        let ok = |p: &[&str]| parse_patterns(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["*", "lobby", "chat:*"]).is_ok());
        assert!(ok(&["bad room"]).is_err());
        assert!(ok(&["a*b"]).is_err());
        assert!(ok(&[""]).is_err());
    }

    #[test]
    fn a_public_key_picks_rs256_or_es256() {
        let rsa = AuthConfig::default().with_public_key_pem(include_bytes!("../../tests/keys/rs256-public.pem"));
        assert_eq!(rsa.unwrap().algorithms(), [Algorithm::RS256]);
        let ec = AuthConfig::default().with_public_key_pem(include_bytes!("../../tests/keys/es256-public.pem"));
        assert_eq!(ec.unwrap().algorithms(), [Algorithm::ES256]);
        let both = ec_and_secret();
        assert_eq!(both.algorithms(), [Algorithm::ES256, Algorithm::HS256]);
        assert!(AuthConfig::default()
            .with_public_key_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err());
        assert!(AuthConfig::default().with_public_key_pem(b"not a key").is_err());
        assert!(AuthConfig::default().with_hs256_secret(b"").is_err());
        let short = AuthConfig::default().with_hs256_secret(&SECRET[..31]).unwrap_err();
        assert!(short.to_string().contains("31 bytes"), "{short}");
        assert!(AuthConfig::default().with_hs256_secret(&SECRET[..32]).is_ok());
    }

    fn ec_and_secret() -> AuthConfig {
        AuthConfig::default()
            .with_public_key_pem(include_bytes!("../../tests/keys/es256-public.pem"))
            .and_then(|c| c.with_hs256_secret(SECRET))
            .unwrap()
    }

    #[test]
    fn with_two_keys_each_token_is_checked_with_the_key_of_its_alg() {
        let v = TokenVerifier::new(&ec_and_secret());
        let claims = json!({"sub": "a", "exp": NOW + 9});
        let es = EncodingKey::from_ec_pem(include_bytes!("../../tests/keys/es256-private.pem")).unwrap();
        assert!(v.verify(&encode(&Header::new(Algorithm::ES256), &claims, &es).unwrap(), NOW).is_ok());
        assert!(v.verify(&sign(claims.clone()), NOW).is_ok());
        let rs = EncodingKey::from_rsa_pem(include_bytes!("../../tests/keys/rs256-private.pem")).unwrap();
        let rs256 = encode(&Header::new(Algorithm::RS256), &claims, &rs).unwrap();
        assert_eq!(v.verify(&rs256, NOW), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let config = AuthConfig::default().with_hs256_secret(b"hunter2 hunter2 hunter2 hunter2!").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{:?}", TokenVerifier::new(&config)).contains("hunter2"));
    }
}
