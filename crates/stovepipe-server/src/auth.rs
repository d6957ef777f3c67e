//! Authentication and authorisation: who is calling, and may they do this.
//!
//! Owns the `[auth]` configuration section, the scope vocabulary, bearer-JWT
//! verification for the two issuers (primary HS256, optional machine issuer
//! EdDSA), the dev-mode and anonymous-read shortcuts, the synthetic ids of
//! machine principals, and minting primary-issuer tokens for the CLI.
//! It does not own transport: the HTTP layer hands us the raw
//! `Authorization` header and the scope its route declares, and maps
//! [`AuthError`] to 401/403. Enforcing "dev mode only on loopback" is the
//! server's job, because only it knows the listen address.
//!
//! Security notes, because they are the reason this module is shaped as it is:
//! - The token's `iss` is read *unverified* only to choose a verifier. Each
//!   verifier pins its own algorithm (HS256 for the primary issuer, EdDSA for
//!   the machine issuer); the header's `alg` is never used to pick one, so
//!   `alg: none` and "HS256 keyed with the public key" confusions cannot work.
//! - After verification the issuer is checked again from the verified claims.
//! - Tokens and secrets are never logged or echoed in error messages; the
//!   reasons in [`AuthError::Unauthenticated`] are fixed strings safe to return
//!   to the caller.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`, in seconds. Small on purpose: CI
/// machines and the server should be NTP-synced, and a long leeway extends the
/// life of a leaked token.
pub const CLOCK_LEEWAY_SECS: i64 = 30;

/// Minimum HS256 secret length. RFC 7518 §3.2 requires a key at least as long
/// as the hash output (256 bits); shorter secrets are brute-forceable offline
/// from any single token.
pub const MIN_SECRET_LEN: usize = 32;

/// Upper bound on the token we are willing to parse. Real tokens are well
/// under 2 KiB; the bound keeps an unauthenticated caller from making us
/// base64- and JSON-decode megabytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Namespace for [`machine_principal_id`]. A fixed, randomly generated UUID
/// that belongs to Stovepipe. Never change it: machine principal ids are
/// stored (e.g. `created_by` on hook releases), and a new namespace would
/// silently turn every existing machine principal into a stranger.
pub const MACHINE_PRINCIPAL_NAMESPACE: Uuid =
    Uuid::from_u128(0xb052_4a5f_972d_4b3d_8e99_b8f7_c187_670b);

/// Length of an Ed25519 SubjectPublicKeyInfo (RFC 8410) in DER, and its fixed
/// prefix (SEQUENCE, AlgorithmIdentifier with OID 1.3.101.112, BIT STRING of
/// 33 bytes with no unused bits). Anything else is not an Ed25519 public key.
const ED25519_SPKI_LEN: usize = 44;
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// The `[auth]` configuration section.
///
/// `Debug` is hand-written so that the secret never reaches a log line.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for primary-issuer tokens. Empty means no tokens at all
    /// (dev mode); the server only allows that on a loopback listener.
    pub hs256_secret: String,
    /// `iss` of primary tokens.
    pub issuer: String,
    /// When true, routes gated on [`Scope::Read`] accept callers without an
    /// `Authorization` header.
    pub anonymous_read: bool,
    /// Optional second issuer (e.g. a CI system's OIDC tokens), EdDSA only.
    pub machine_issuer: Option<MachineIssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: String::new(),
            issuer: "stovepipe".to_owned(),
            anonymous_read: false,
            machine_issuer: None,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "hs256_secret",
                &if self.hs256_secret.is_empty() {
                    "<empty>"
                } else {
                    "<redacted>"
                },
            )
            .field("issuer", &self.issuer)
            .field("anonymous_read", &self.anonymous_read)
            .field("machine_issuer", &self.machine_issuer)
            .finish()
    }
}

/// The `[auth.machine_issuer]` configuration section. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineIssuerConfig {
    /// Expected `iss`; must differ from the primary issuer.
    pub issuer: String,
    /// Required `aud`: a machine token minted for another service must not
    /// work here.
    pub audience: String,
    /// The issuer's Ed25519 public key, SubjectPublicKeyInfo PEM
    /// (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// Claim holding the space-separated scopes; `scp` (array) is the fallback.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
}

fn default_scope_claim() -> String {
    "scope".to_owned()
}

/// A configuration value the authenticator refuses to run with, or a token
/// that cannot be minted. `key` is the dotted configuration key at fault so
/// that the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("invalid configuration `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot mint token: {0}")]
    Mint(String),
}

impl AuthConfigError {
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }

    /// The configuration key at fault, if the error is about configuration.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Mint(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Scopes and principals
// ---------------------------------------------------------------------------

/// What a caller may do. Every route declares exactly one of these as its gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Ingest,
    BuildsReport,
    HooksWrite,
    QueuesWrite,
    /// Satisfies every gate.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Read,
        Scope::Ingest,
        Scope::BuildsReport,
        Scope::HooksWrite,
        Scope::QueuesWrite,
        Scope::Admin,
    ];

    /// The wire name, as it appears in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::BuildsReport => "builds:report",
            Scope::HooksWrite => "hooks:write",
            Scope::QueuesWrite => "queues:write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope string that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// An authenticated (or deliberately anonymous / dev-mode) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id recorded as the actor: `sub` for the primary issuer, a UUID v5
    /// for the machine issuer (see [`machine_principal_id`]).
    pub id: String,
    pub subject: String,
    pub issuer: String,
    pub scopes: BTreeSet<Scope>,
    /// No `Authorization` header, let in by `anonymous_read`.
    pub anonymous: bool,
    /// No secret configured: everybody is admin.
    pub dev_mode: bool,
}

impl Principal {
    /// Whether this principal passes a gate. `admin` satisfies every gate.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    fn dev(issuer: &str) -> Self {
        Self {
            id: "dev".to_owned(),
            subject: "dev".to_owned(),
            issuer: issuer.to_owned(),
            scopes: BTreeSet::from([Scope::Admin]),
            anonymous: false,
            dev_mode: true,
        }
    }

    fn anonymous() -> Self {
        Self {
            id: "anonymous".to_owned(),
            subject: "anonymous".to_owned(),
            issuer: String::new(),
            scopes: BTreeSet::from([Scope::Read]),
            anonymous: true,
            dev_mode: false,
        }
    }
}

/// Stable synthetic id of a machine principal: UUID v5 in
/// [`MACHINE_PRINCIPAL_NAMESPACE`] over `"<iss>#<sub>"`. Machine subjects are
/// free-form strings chosen by another system (e.g. `repo:org/x:ref:main`);
/// hashing them gives a fixed-size id that cannot collide with a primary
/// `sub` by accident and stays the same across restarts.
pub fn machine_principal_id(issuer: &str, sub: &str) -> String {
    let name = format!("{issuer}#{sub}");
    Uuid::new_v5(&MACHINE_PRINCIPAL_NAMESPACE, name.as_bytes()).to_string()
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401. The reason is a fixed phrase, safe to return to the caller.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// 403. The caller is known but lacks the scope.
    #[error("forbidden: scope `{needed}` required")]
    Forbidden { needed: Scope },
}

impl AuthError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Unauthenticated(_) => 401,
            AuthError::Forbidden { .. } => 403,
        }
    }

    fn unauthenticated(reason: &'static str) -> Self {
        // Debug level: failed logins are routine (expired CLI tokens), and the
        // reason is a fixed phrase, never token material.
        tracing::debug!(reason, "authentication failed");
        AuthError::Unauthenticated(reason.to_owned())
    }
}

// ---------------------------------------------------------------------------
// Authenticator
// ---------------------------------------------------------------------------

/// Verifier for one issuer: its key, its pinned algorithm, its rules.
struct Verifier {
    issuer: String,
    key: DecodingKey,
    validation: Validation,
    kind: IssuerKind,
}

enum IssuerKind {
    Primary,
    Machine { scope_claim: String },
}

/// Checks bearer tokens against the configured issuers. Build once at start-up
/// with [`Authenticator::new`]; its configuration is immutable and it is
/// cheap to share. It remembers the tokens it verified lately
/// ([`VerifiedTokens`]).
pub struct Authenticator {
    primary_issuer: String,
    /// `None` in dev mode.
    primary: Option<Verifier>,
    machine: Option<Verifier>,
    anonymous_read: bool,
    verified: VerifiedTokens,
}

/// Tokens in [`VerifiedTokens`] at most; a full set is emptied. A deploy
/// gate's or a dashboard's callers hold a handful of tokens each.
const VERIFIED_TOKENS_CAPACITY: usize = 1_024;

/// Tokens this authenticator verified lately, by their whole text, with
/// the principal each proved and its validity times.
///
/// A token's signature and claims are fixed by its text, so a text that
/// verified once verifies again: only its times are checked against the
/// clock on every use (so a remembered token still expires), and a token
/// that differs in any character (a forged signature, edited claims) is
/// another key and is verified in full. Only tokens that passed every
/// check are kept. Verifying is the costly part of a read answered from
/// memory: a few microseconds for HS256, tens for an EdDSA machine token.
#[derive(Default)]
struct VerifiedTokens(Mutex<HashMap<String, (Principal, TokenTimes)>>);

impl VerifiedTokens {
    /// The principal `token` proved, if it is remembered: `Err` when its
    /// times no longer admit it (and it is forgotten).
    fn principal(&self, token: &str, now_unix: i64) -> Option<Result<Principal, AuthError>> {
        let mut tokens = self.lock();
        let (principal, times) = tokens.get(token)?;
        Some(match times.check(now_unix) {
            Ok(()) => Ok(principal.clone()),
            Err(e) => {
                tokens.remove(token);
                Err(e)
            }
        })
    }

    fn keep(&self, token: &str, principal: &Principal, times: TokenTimes) {
        let mut tokens = self.lock();
        if tokens.len() >= VERIFIED_TOKENS_CAPACITY {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), (principal.clone(), times));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Principal, TokenTimes)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of Debug output on purpose.
        f.debug_struct("Authenticator")
            .field("primary_issuer", &self.primary_issuer)
            .field("dev_mode", &self.dev_mode())
            .field("machine_issuer", &self.machine.as_ref().map(|m| &m.issuer))
            .field("anonymous_read", &self.anonymous_read)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Validates the configuration and prepares the verifiers.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        if config.issuer.is_empty() {
            return Err(AuthConfigError::invalid("auth.issuer", "must not be empty"));
        }
        let primary = if config.hs256_secret.is_empty() {
            None
        } else {
            check_secret(&config.hs256_secret)?;
            Some(Verifier {
                issuer: config.issuer.clone(),
                key: DecodingKey::from_secret(config.hs256_secret.as_bytes()),
                validation: validation(Algorithm::HS256, &config.issuer, None),
                kind: IssuerKind::Primary,
            })
        };
        let machine = match &config.machine_issuer {
            None => None,
            Some(m) => Some(machine_verifier(m, &config.issuer)?),
        };
        Ok(Self {
            primary_issuer: config.issuer.clone(),
            primary,
            machine,
            anonymous_read: config.anonymous_read,
            verified: VerifiedTokens::default(),
        })
    }

    /// True when no secret is configured: every caller is an admin.
    pub fn dev_mode(&self) -> bool {
        self.primary.is_none()
    }

    /// Decides whether the caller behind `authorization_header` passes the
    /// gate `needed`, at time `now_unix` (seconds; injected so tests and the
    /// server agree on one clock).
    pub fn authenticate(
        &self,
        authorization_header: Option<&str>,
        needed: Scope,
        now_unix: i64,
    ) -> Result<Principal, AuthError> {
        if self.dev_mode() {
            // Whatever the caller sent: dev mode has no key to check it with.
            return Ok(Principal::dev(&self.primary_issuer));
        }
        let Some(header) = authorization_header else {
            if self.anonymous_read && needed == Scope::Read {
                return Ok(Principal::anonymous());
            }
            return Err(AuthError::unauthenticated("missing bearer token"));
        };
        let token = bearer_token(header)?;
        let principal = self.verify(token, now_unix)?;
        if principal.allows(needed) {
            Ok(principal)
        } else {
            tracing::debug!(principal = %principal.id, needed = %needed, "forbidden: missing scope");
            Err(AuthError::Forbidden { needed })
        }
    }

    /// The principal `token` proves at `now_unix`: remembered, or verified
    /// in full and then remembered.
    fn verify(&self, token: &str, now_unix: i64) -> Result<Principal, AuthError> {
        if let Some(known) = self.verified.principal(token, now_unix) {
            return known;
        }
        let (principal, times) = self.verify_in_full(token, now_unix)?;
        self.verified.keep(token, &principal, times);
        Ok(principal)
    }

    fn verify_in_full(
        &self,
        token: &str,
        now_unix: i64,
    ) -> Result<(Principal, TokenTimes), AuthError> {
        let claimed_issuer = unverified_issuer(token)?;
        let verifier = [self.primary.as_ref(), self.machine.as_ref()]
            .into_iter()
            .flatten()
            .find(|v| v.issuer == claimed_issuer)
            .ok_or_else(|| AuthError::unauthenticated("unknown token issuer"))?;

        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, &verifier.key, &verifier.validation)
                .map_err(|e| AuthError::unauthenticated(jwt_error_reason(e.kind())))?
                .claims;

        // jsonwebtoken accepts an array `iss`, and checked it only against a
        // set; insist on exactly our issuer as a string.
        if claims.get("iss").and_then(Value::as_str) != Some(verifier.issuer.as_str()) {
            return Err(AuthError::unauthenticated("token issuer mismatch"));
        }
        let times = TokenTimes::of(&claims)?;
        times.check(now_unix)?;
        let subject = match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => sub.to_owned(),
            _ => return Err(AuthError::unauthenticated("token has no subject")),
        };

        let (id, scopes) = match &verifier.kind {
            IssuerKind::Primary => (subject.clone(), scopes_from(claims.get("scope"))?),
            IssuerKind::Machine { scope_claim } => {
                // The configured claim wins when present; `scp` (array, as some
                // identity providers emit) is the fallback.
                let raw = claims
                    .get(scope_claim.as_str())
                    .or_else(|| claims.get("scp"));
                (
                    machine_principal_id(&verifier.issuer, &subject),
                    scopes_from(raw)?,
                )
            }
        };
        let principal = Principal {
            id,
            subject,
            issuer: verifier.issuer.clone(),
            scopes,
            anonymous: false,
            dev_mode: false,
        };
        Ok((principal, times))
    }

    #[cfg(test)]
    fn tokens_remembered(&self) -> usize {
        self.verified.lock().len()
    }
}

/// Validation pinned to one algorithm and one issuer. Time checks are done by
/// us against the injected clock ([`TokenTimes`]), because jsonwebtoken
/// reads the system clock; it still enforces the *presence* of `exp`.
fn validation(alg: Algorithm, issuer: &str, audience: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.set_issuer(&[issuer]);
    if let Some(aud) = audience {
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        v.set_audience(&[aud]);
        v.validate_aud = true;
    } else {
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Primary tokens have no audience concept; an `aud` we did not ask
        // for is not a reason to refuse our own token.
        v.validate_aud = false;
    }
    v
}

fn check_secret(secret: &str) -> Result<(), AuthConfigError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthConfigError::invalid(
            "auth.hs256_secret",
            format!("must be at least {MIN_SECRET_LEN} bytes (or empty for dev mode)"),
        ));
    }
    Ok(())
}

fn machine_verifier(
    m: &MachineIssuerConfig,
    primary_issuer: &str,
) -> Result<Verifier, AuthConfigError> {
    if m.issuer.is_empty() {
        return Err(AuthConfigError::invalid(
            "auth.machine_issuer.issuer",
            "must not be empty",
        ));
    }
    if m.issuer == primary_issuer {
        // Routing is by issuer: two verifiers for one issuer would make the
        // choice of algorithm ambiguous.
        return Err(AuthConfigError::invalid(
            "auth.machine_issuer.issuer",
            "must differ from auth.issuer",
        ));
    }
    if m.audience.is_empty() {
        return Err(AuthConfigError::invalid(
            "auth.machine_issuer.audience",
            "must not be empty",
        ));
    }
    if m.scope_claim.is_empty() {
        return Err(AuthConfigError::invalid(
            "auth.machine_issuer.scope_claim",
            "must not be empty",
        ));
    }
    let raw_key = ed25519_public_key_from_pem(&m.public_key_pem)
        .map_err(|reason| AuthConfigError::invalid("auth.machine_issuer.public_key_pem", reason))?;
    Ok(Verifier {
        issuer: m.issuer.clone(),
        key: DecodingKey::from_ed_der(&raw_key),
        validation: validation(Algorithm::EdDSA, &m.issuer, Some(&m.audience)),
        kind: IssuerKind::Machine {
            scope_claim: m.scope_claim.clone(),
        },
    })
}

/// Extracts the 32 raw key bytes from an Ed25519 `PUBLIC KEY` PEM. Strict on
/// purpose: a truncated or wrong-type key would otherwise be accepted at
/// start-up and then reject every machine token with a confusing 401.
fn ed25519_public_key_from_pem(pem: &str) -> Result<Vec<u8>, &'static str> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let pem = pem.trim();
    let body = pem
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or("expected a PEM block `-----BEGIN PUBLIC KEY-----` … `-----END PUBLIC KEY-----`")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| "PEM body is not valid base64")?;
    match der.strip_prefix(ED25519_SPKI_PREFIX.as_slice()) {
        Some(raw) if der.len() == ED25519_SPKI_LEN => Ok(raw.to_vec()),
        _ => Err("not an Ed25519 public key (SubjectPublicKeyInfo, RFC 8410)"),
    }
}

/// Splits `Bearer <token>`. The scheme is case-insensitive (RFC 7235 §2.1).
fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let malformed = || AuthError::unauthenticated("authorization header must be `Bearer <token>`");
    let (scheme, token) = header.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim_start();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.contains(char::is_whitespace)
    {
        return Err(malformed());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::unauthenticated("token too large"));
    }
    Ok(token)
}

/// Reads `iss` from the payload without verifying anything. The result only
/// selects a verifier; it is trusted for nothing else. The header is not
/// looked at here at all.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let malformed = || AuthError::unauthenticated("malformed token");
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err(AuthError::unauthenticated("token has no issuer")),
    }
}

/// A token's validity times: `exp` (required) and `nbf` (if present).
#[derive(Debug, Clone, Copy)]
struct TokenTimes {
    exp: i64,
    nbf: Option<i64>,
}

impl TokenTimes {
    fn of(claims: &Map<String, Value>) -> Result<Self, AuthError> {
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or_else(|| AuthError::unauthenticated("token has no valid expiry"))?;
        let nbf = claims
            .get("nbf")
            .map(|nbf| {
                numeric_date(nbf)
                    .ok_or_else(|| AuthError::unauthenticated("token has an invalid nbf"))
            })
            .transpose()?;
        Ok(Self { exp, nbf })
    }

    /// Both against the injected clock, with leeway.
    fn check(self, now_unix: i64) -> Result<(), AuthError> {
        if now_unix.saturating_sub(CLOCK_LEEWAY_SECS) >= self.exp {
            return Err(AuthError::unauthenticated("token expired"));
        }
        if let Some(nbf) = self.nbf
            && nbf > now_unix.saturating_add(CLOCK_LEEWAY_SECS)
        {
            return Err(AuthError::unauthenticated("token not yet valid"));
        }
        Ok(())
    }
}

/// A JWT NumericDate (RFC 7519 §2): seconds, possibly fractional.
fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    if value.is_u64() {
        // Beyond i64: far future, treat as "never expires" rather than fail.
        return Some(i64::MAX);
    }
    // `as` saturates for out-of-range floats; NaN cannot come from JSON.
    value
        .as_f64()
        .filter(|f| f.is_finite())
        .map(|f| f.floor() as i64)
}

/// Scopes from a claim value: a space-separated string or an array of
/// strings. Absent means no scopes. Unknown names are ignored so that an
/// issuer can grant scopes for other services in the same token; a claim of
/// the wrong type is a malformed token.
fn scopes_from(value: Option<&Value>) -> Result<BTreeSet<Scope>, AuthError> {
    let parse = |s: &str| s.parse::<Scope>().ok();
    match value {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().filter_map(parse).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| AuthError::unauthenticated("malformed scope claim"))
            })
            .filter_map(|item| item.map(parse).transpose())
            .collect(),
        Some(_) => Err(AuthError::unauthenticated("malformed scope claim")),
    }
}

/// A caller-safe phrase for a jsonwebtoken failure. Deliberately coarse:
/// telling an attacker *which* check failed helps them, not the operator.
fn jwt_error_reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::MissingRequiredClaim(claim) => match claim.as_str() {
            "sub" => "token has no subject",
            "exp" => "token has no valid expiry",
            "aud" => "token has no audience",
            _ => "token is missing a required claim",
        },
        K::InvalidAudience => "token audience mismatch",
        K::InvalidIssuer => "token issuer mismatch",
        _ => "invalid token",
    }
}

// ---------------------------------------------------------------------------
// Minting
// ---------------------------------------------------------------------------

/// Mints a primary-issuer HS256 token (used by the CLI `token` command and by
/// tests). Claims: `iss`, `sub`, `iat`, `exp` = now + ttl, `scope`
/// (space-separated).
pub fn mint_token(
    secret: &str,
    issuer: &str,
    sub: &str,
    scopes: &[Scope],
    ttl: Duration,
    now_unix: i64,
) -> Result<String, AuthConfigError> {
    if secret.is_empty() {
        return Err(AuthConfigError::invalid(
            "auth.hs256_secret",
            "is empty (dev mode): no tokens can be minted",
        ));
    }
    check_secret(secret)?;
    if issuer.is_empty() {
        return Err(AuthConfigError::invalid("auth.issuer", "must not be empty"));
    }
    if sub.is_empty() {
        return Err(AuthConfigError::Mint(
            "subject must not be empty".to_owned(),
        ));
    }
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let scope = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(" ");
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": sub,
        "iat": now_unix,
        "exp": now_unix.saturating_add(ttl_secs),
        "scope": scope,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthConfigError::Mint(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("write".parse::<Scope>().is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer a.b.c").unwrap(), "a.b.c");
        assert_eq!(bearer_token("bearer  a.b.c").unwrap(), "a.b.c");
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic a.b.c",
            "Bearer a b",
            "a.b.c",
        ] {
            assert!(bearer_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&serde_json::json!(10)), Some(10));
        assert_eq!(numeric_date(&serde_json::json!(10.9)), Some(10));
        assert_eq!(numeric_date(&serde_json::json!(u64::MAX)), Some(i64::MAX));
        assert_eq!(numeric_date(&serde_json::json!("10")), None);
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = AuthConfig {
            hs256_secret: "s".repeat(40),
            ..AuthConfig::default()
        };
        assert!(!format!("{config:?}").contains("ssss"));
        let auth = Authenticator::new(&config).unwrap();
        assert!(!format!("{auth:?}").contains("ssss"));
    }

    const SECRET: &str = "remembered-tokens-secret-0123456789abcdef";
    const NOW: i64 = 1_800_000_000;

    fn signing() -> Authenticator {
        Authenticator::new(&AuthConfig {
            hs256_secret: SECRET.to_owned(),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn token(sub: &str, ttl: Duration) -> String {
        mint_token(SECRET, "stovepipe", sub, &[Scope::Read], ttl, NOW).unwrap()
    }

    fn reason(result: Result<Principal, AuthError>) -> String {
        match result {
            Err(AuthError::Unauthenticated(reason)) => reason,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let auth = signing();
        let token = token("alice", Duration::from_mins(10));
        assert_eq!(auth.verify(&token, NOW).unwrap().id, "alice");
        assert_eq!(auth.tokens_remembered(), 1);
        assert_eq!(auth.verify(&token, NOW + 60).unwrap().id, "alice");
        assert_eq!(
            reason(auth.verify(&token, NOW + 10 * 60 + 31)),
            "token expired"
        );
        assert_eq!(auth.tokens_remembered(), 0, "an expired token is forgotten");
        assert_eq!(
            reason(auth.verify(&token, NOW + 10 * 60 + 31)),
            "token expired"
        );
    }

    #[test]
    fn a_token_that_differs_from_a_remembered_one_is_verified_in_full() {
        let auth = signing();
        let token = token("alice", Duration::from_mins(10));
        auth.verify(&token, NOW).unwrap();
        // The same claims, a character of the signature changed.
        let at = token.len() - 10;
        let changed = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{changed}{}", &token[..at], &token[at + 1..]);
        assert_eq!(reason(auth.verify(&forged, NOW)), "invalid token");
        // Other claims under the remembered signature.
        let (_, signature) = token.rsplit_once('.').unwrap();
        let other = super::tests::token("mallory", Duration::from_mins(10));
        let (unsigned, _) = other.rsplit_once('.').unwrap();
        let spliced = format!("{unsigned}.{signature}");
        assert_eq!(reason(auth.verify(&spliced, NOW)), "invalid token");
        assert_eq!(auth.tokens_remembered(), 1, "neither was remembered");
    }

    #[test]
    fn remembered_tokens_stay_within_their_capacity() {
        let auth = signing();
        for n in 0..=VERIFIED_TOKENS_CAPACITY + 10 {
            let sub = format!("user-{n}");
            assert_eq!(
                auth.verify(&token(&sub, Duration::from_mins(10)), NOW)
                    .unwrap()
                    .id,
                sub
            );
            assert!(auth.tokens_remembered() <= VERIFIED_TOKENS_CAPACITY);
        }
        assert!(auth.tokens_remembered() > 0);
    }
}
