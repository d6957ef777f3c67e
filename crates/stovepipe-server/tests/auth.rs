//! Bearer-token authentication through the public API of `stovepipe_server::auth`.
//!
//! Tokens are forged by hand here (jsonwebtoken for well-formed ones, raw
//! base64 for hostile ones) so each test aims at one check of the verifier.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use stovepipe_server::auth::{
    AuthConfig, AuthConfigError, AuthError, Authenticator, MachineIssuerConfig, Principal, Scope,
    machine_principal_id, mint_token,
};

// TEST-ONLY Ed25519 key pairs, generated with `openssl genpkey -algorithm ed25519`
// for this file. They protect nothing; never use them outside tests.
const TEST_MACHINE_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFtJyBia0/dPfb0YvDCNykdVAx3U8gmGkzZFDXBuxiO6
-----END PRIVATE KEY-----
";
const TEST_MACHINE_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAuN/0zsW+ZEfZqp6MWnuyb3A1ZQl+M3cTt+7Xg6KdVBQ=
-----END PUBLIC KEY-----
";
/// A second, unrelated test key: "some other party's" signing key.
const TEST_OTHER_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIO5lNLcXHebleKgat0LvpBX85h5GY358iVnlXyZXCed3
-----END PRIVATE KEY-----
";

const SECRET: &str = "test-secret-test-secret-test-secret-0123";
const PRIMARY: &str = "stovepipe";
const MACHINE: &str = "https://ci.example.com";
const AUDIENCE: &str = "stovepipe";
const NOW: i64 = 1_700_000_000;

fn config() -> AuthConfig {
    AuthConfig {
        hs256_secret: SECRET.to_owned(),
        issuer: PRIMARY.to_owned(),
        anonymous_read: false,
        machine_issuer: Some(MachineIssuerConfig {
            issuer: MACHINE.to_owned(),
            audience: AUDIENCE.to_owned(),
            public_key_pem: TEST_MACHINE_PUBLIC_PEM.to_owned(),
            scope_claim: "scope".to_owned(),
        }),
    }
}

fn authenticator() -> Authenticator {
    match Authenticator::new(&config()) {
        Ok(a) => a,
        Err(e) => panic!("test config rejected: {e}"),
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    match jsonwebtoken::encode(&Header::new(alg), claims, key) {
        Ok(t) => t,
        Err(e) => panic!("cannot sign test token: {e}"),
    }
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
}

fn eddsa(private_pem: &str, claims: &Value) -> String {
    match EncodingKey::from_ed_pem(private_pem.as_bytes()) {
        Ok(key) => sign(Algorithm::EdDSA, &key, claims),
        Err(e) => panic!("bad test key: {e}"),
    }
}

fn primary_claims(scope: &str) -> Value {
    json!({ "iss": PRIMARY, "sub": "alice", "iat": NOW, "exp": NOW + 600, "scope": scope })
}

fn machine_claims() -> Value {
    json!({ "iss": MACHINE, "sub": "repo:org/x:ref:main", "aud": AUDIENCE, "iat": NOW, "exp": NOW + 600, "scope": "ingest builds:report" })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn auth_with(a: &Authenticator, token: &str, needed: Scope) -> Result<Principal, AuthError> {
    a.authenticate(Some(&bearer(token)), needed, NOW)
}

#[track_caller]
fn assert_401(result: Result<Principal, AuthError>) {
    match result {
        Err(AuthError::Unauthenticated(_)) => {}
        other => panic!("expected 401, got {other:?}"),
    }
}

fn unsigned_token(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[test]
fn valid_primary_token_with_scope() {
    let p = auth_with(
        &authenticator(),
        &hs256(SECRET.as_bytes(), &primary_claims("read ingest")),
        Scope::Ingest,
    )
    .unwrap();
    assert_eq!(p.id, "alice");
    assert_eq!(p.subject, "alice");
    assert_eq!(p.issuer, PRIMARY);
    assert_eq!(p.scopes, BTreeSet::from([Scope::Read, Scope::Ingest]));
    assert!(!p.anonymous && !p.dev_mode);
}

#[test]
fn primary_token_with_wrong_secret_is_401() {
    let token = hs256(
        b"another-secret-another-secret-0123456",
        &primary_claims("read"),
    );
    assert_401(auth_with(&authenticator(), &token, Scope::Read));
}

#[test]
fn alg_none_is_401() {
    let token = unsigned_token(
        &json!({ "alg": "none", "typ": "JWT" }),
        &primary_claims("admin"),
    );
    assert_401(auth_with(&authenticator(), &token, Scope::Read));
    let token = unsigned_token(&json!({ "alg": "none", "typ": "JWT" }), &machine_claims());
    assert_401(auth_with(&authenticator(), &token, Scope::Ingest));
}

#[test]
fn hs256_keyed_with_machine_public_key_is_401() {
    // The classic algorithm-confusion attack: the public key is public.
    let token = hs256(TEST_MACHINE_PUBLIC_PEM.as_bytes(), &machine_claims());
    assert_401(auth_with(&authenticator(), &token, Scope::Ingest));
}

#[test]
fn hs256_token_for_machine_issuer_signed_with_primary_secret_is_401() {
    let token = hs256(SECRET.as_bytes(), &machine_claims());
    assert_401(auth_with(&authenticator(), &token, Scope::Ingest));
}

#[test]
fn eddsa_token_claiming_primary_issuer_is_401() {
    let token = eddsa(TEST_MACHINE_PRIVATE_PEM, &primary_claims("admin"));
    assert_401(auth_with(&authenticator(), &token, Scope::Read));
}

#[test]
fn expired_is_401_after_leeway() {
    let a = authenticator();
    let mut claims = primary_claims("read");
    claims["exp"] = json!(NOW - 31);
    assert_401(auth_with(
        &a,
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
    // Within the documented 30 s leeway: still accepted.
    claims["exp"] = json!(NOW - 29);
    auth_with(&a, &hs256(SECRET.as_bytes(), &claims), Scope::Read).unwrap();
    // The injected clock is the one that counts, not the system clock.
    claims["exp"] = json!(NOW + 600);
    let token = hs256(SECRET.as_bytes(), &claims);
    assert_401(a.authenticate(Some(&bearer(&token)), Scope::Read, NOW + 700));
}

#[test]
fn not_yet_valid_is_401() {
    let mut claims = primary_claims("read");
    claims["nbf"] = json!(NOW + 120);
    assert_401(auth_with(
        &authenticator(),
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
}

#[test]
fn missing_sub_is_401() {
    let a = authenticator();
    let mut claims = primary_claims("read");
    claims.as_object_mut().unwrap().remove("sub");
    assert_401(auth_with(
        &a,
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
    claims["sub"] = json!("");
    assert_401(auth_with(
        &a,
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
}

#[test]
fn missing_exp_is_401() {
    let mut claims = primary_claims("read");
    claims.as_object_mut().unwrap().remove("exp");
    assert_401(auth_with(
        &authenticator(),
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
}

#[test]
fn machine_token_with_wrong_or_missing_audience_is_401() {
    let a = authenticator();
    let mut claims = machine_claims();
    claims["aud"] = json!("some-other-service");
    assert_401(auth_with(
        &a,
        &eddsa(TEST_MACHINE_PRIVATE_PEM, &claims),
        Scope::Ingest,
    ));
    claims.as_object_mut().unwrap().remove("aud");
    assert_401(auth_with(
        &a,
        &eddsa(TEST_MACHINE_PRIVATE_PEM, &claims),
        Scope::Ingest,
    ));
}

#[test]
fn machine_token_signed_by_another_key_is_401() {
    let token = eddsa(TEST_OTHER_PRIVATE_PEM, &machine_claims());
    assert_401(auth_with(&authenticator(), &token, Scope::Ingest));
}

#[test]
fn valid_machine_token_gets_stable_uuid_v5_id() {
    let a = authenticator();
    let token = eddsa(TEST_MACHINE_PRIVATE_PEM, &machine_claims());
    let first = auth_with(&a, &token, Scope::BuildsReport).unwrap();
    let second = auth_with(&a, &token, Scope::Ingest).unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(
        first.id,
        machine_principal_id(MACHINE, "repo:org/x:ref:main")
    );
    let id = uuid::Uuid::parse_str(&first.id).unwrap();
    assert_eq!(id.get_version_num(), 5);
    assert_eq!(first.subject, "repo:org/x:ref:main");
    assert_eq!(first.issuer, MACHINE);
    assert_eq!(
        first.scopes,
        BTreeSet::from([Scope::Ingest, Scope::BuildsReport])
    );
    // Stable across authenticator instances (i.e. restarts) too, and distinct per subject.
    assert_eq!(
        auth_with(&authenticator(), &token, Scope::Ingest)
            .unwrap()
            .id,
        first.id
    );
    assert_ne!(machine_principal_id(MACHINE, "other"), first.id);
    // An audience array that includes ours is fine (RFC 7519 §4.1.3).
    let mut claims = machine_claims();
    claims["aud"] = json!(["elsewhere", AUDIENCE]);
    auth_with(&a, &eddsa(TEST_MACHINE_PRIVATE_PEM, &claims), Scope::Ingest).unwrap();
}

#[test]
fn missing_scope_is_403() {
    let token = hs256(SECRET.as_bytes(), &primary_claims("read"));
    assert_eq!(
        auth_with(&authenticator(), &token, Scope::HooksWrite),
        Err(AuthError::Forbidden {
            needed: Scope::HooksWrite
        })
    );
    let token = hs256(SECRET.as_bytes(), &primary_claims(""));
    assert_eq!(
        auth_with(&authenticator(), &token, Scope::Read).map_err(|e| e.status()),
        Err(403)
    );
}

#[test]
fn admin_satisfies_every_scope() {
    let a = authenticator();
    let token = hs256(SECRET.as_bytes(), &primary_claims("admin"));
    for scope in Scope::ALL {
        assert!(
            auth_with(&a, &token, scope).unwrap().allows(scope),
            "{scope}"
        );
    }
}

#[test]
fn unknown_scopes_are_ignored() {
    let token = hs256(SECRET.as_bytes(), &primary_claims("deploy read repo:write"));
    let p = auth_with(&authenticator(), &token, Scope::Read).unwrap();
    assert_eq!(p.scopes, BTreeSet::from([Scope::Read]));
}

#[test]
fn machine_scp_array_form() {
    let a = authenticator();
    let mut claims = machine_claims();
    claims.as_object_mut().unwrap().remove("scope");
    claims["scp"] = json!(["queues:write", "unknown:thing"]);
    let p = auth_with(
        &a,
        &eddsa(TEST_MACHINE_PRIVATE_PEM, &claims),
        Scope::QueuesWrite,
    )
    .unwrap();
    assert_eq!(p.scopes, BTreeSet::from([Scope::QueuesWrite]));
}

#[test]
fn machine_custom_scope_claim() {
    let mut cfg = config();
    cfg.machine_issuer.as_mut().unwrap().scope_claim = "stovepipe_scopes".to_owned();
    let a = Authenticator::new(&cfg).unwrap();
    let mut claims = machine_claims();
    claims["stovepipe_scopes"] = json!("hooks:write");
    let p = auth_with(
        &a,
        &eddsa(TEST_MACHINE_PRIVATE_PEM, &claims),
        Scope::HooksWrite,
    )
    .unwrap();
    // Only the configured claim counts; the `scope` claim is not read.
    assert_eq!(p.scopes, BTreeSet::from([Scope::HooksWrite]));
}

#[test]
fn unknown_issuer_is_401() {
    let mut claims = primary_claims("admin");
    claims["iss"] = json!("https://evil.example.com");
    assert_401(auth_with(
        &authenticator(),
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
    claims.as_object_mut().unwrap().remove("iss");
    assert_401(auth_with(
        &authenticator(),
        &hs256(SECRET.as_bytes(), &claims),
        Scope::Read,
    ));
}

#[test]
fn garbage_header_is_401() {
    let a = authenticator();
    let good = hs256(SECRET.as_bytes(), &primary_claims("read"));
    for header in [
        String::new(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Basic dXNlcjpwYXNz".to_owned(),
        good.clone(),
        format!("Token {good}"),
        "Bearer not-a-jwt".to_owned(),
        "Bearer a.b.c".to_owned(),
        "Bearer %%%.%%%.%%%".to_owned(),
        format!("Bearer {good}.extra"),
    ] {
        match a.authenticate(Some(&header), Scope::Read, NOW) {
            Err(AuthError::Unauthenticated(_)) => {}
            other => panic!("{header:?}: expected 401, got {other:?}"),
        }
    }
    // Missing header without anonymous_read: 401 too.
    assert_401(a.authenticate(None, Scope::Read, NOW));
}

#[test]
fn dev_mode_makes_everyone_admin() {
    let cfg = AuthConfig {
        hs256_secret: String::new(),
        ..config()
    };
    let a = Authenticator::new(&cfg).unwrap();
    assert!(a.dev_mode());
    assert!(!authenticator().dev_mode());
    for header in [None, Some("garbage"), Some("Bearer a.b.c")] {
        let p = a.authenticate(header, Scope::Admin, NOW).unwrap();
        assert!(p.dev_mode);
        assert!(p.scopes.contains(&Scope::Admin));
        assert!(Scope::ALL.into_iter().all(|s| p.allows(s)));
    }
}

#[test]
fn anonymous_read_only_for_read_without_header() {
    let cfg = AuthConfig {
        anonymous_read: true,
        ..config()
    };
    let a = Authenticator::new(&cfg).unwrap();
    let p = a.authenticate(None, Scope::Read, NOW).unwrap();
    assert!(p.anonymous);
    assert_eq!(p.scopes, BTreeSet::from([Scope::Read]));
    assert_401(a.authenticate(None, Scope::Ingest, NOW));
    assert_401(a.authenticate(None, Scope::Admin, NOW));
    // A header that is present but bad is an error, not a fallback to anonymous.
    assert_401(a.authenticate(Some("Bearer junk"), Scope::Read, NOW));
    // A real token still authenticates as its subject.
    let token = hs256(SECRET.as_bytes(), &primary_claims("ingest"));
    let p = a.authenticate(Some(&bearer(&token)), Scope::Read, NOW);
    assert_eq!(
        p,
        Err(AuthError::Forbidden {
            needed: Scope::Read
        })
    );
    // And without anonymous_read, no header is 401.
    assert_401(authenticator().authenticate(None, Scope::Read, NOW));
}

fn config_error_key(cfg: &AuthConfig) -> Option<&'static str> {
    Authenticator::new(cfg)
        .err()
        .and_then(|e: AuthConfigError| e.key())
}

#[test]
fn config_validation_names_the_key() {
    let short = AuthConfig {
        hs256_secret: "too-short".to_owned(),
        ..config()
    };
    assert_eq!(config_error_key(&short), Some("auth.hs256_secret"));

    let mut bad_pem = config();
    bad_pem.machine_issuer.as_mut().unwrap().public_key_pem = "not a pem".to_owned();
    assert_eq!(
        config_error_key(&bad_pem),
        Some("auth.machine_issuer.public_key_pem")
    );
    let err = Authenticator::new(&bad_pem).unwrap_err().to_string();
    assert!(err.contains("auth.machine_issuer.public_key_pem"), "{err}");

    // A private key, or a P-256 (test-only) public key, is not accepted.
    bad_pem.machine_issuer.as_mut().unwrap().public_key_pem = TEST_MACHINE_PRIVATE_PEM.to_owned();
    assert_eq!(
        config_error_key(&bad_pem),
        Some("auth.machine_issuer.public_key_pem")
    );
    bad_pem.machine_issuer.as_mut().unwrap().public_key_pem = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErauH733su8ws9qmvWCEifb23VF1m
vFZaHzPYfTPyRKrHFIzpws7bZQQ6IYy7nITvAwYwR7PB7PpTK9WCKjwXfA==
-----END PUBLIC KEY-----"
        .to_owned();
    assert_eq!(
        config_error_key(&bad_pem),
        Some("auth.machine_issuer.public_key_pem")
    );
    // Truncated Ed25519 key.
    bad_pem.machine_issuer.as_mut().unwrap().public_key_pem =
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAuN/0zsW+ZEfZqp6MWnuyb3A1ZQl+M3cTt+7X\n-----END PUBLIC KEY-----".to_owned();
    assert_eq!(
        config_error_key(&bad_pem),
        Some("auth.machine_issuer.public_key_pem")
    );

    let mut same_issuer = config();
    same_issuer.machine_issuer.as_mut().unwrap().issuer = PRIMARY.to_owned();
    assert_eq!(
        config_error_key(&same_issuer),
        Some("auth.machine_issuer.issuer")
    );

    let mut no_audience = config();
    no_audience.machine_issuer.as_mut().unwrap().audience = String::new();
    assert_eq!(
        config_error_key(&no_audience),
        Some("auth.machine_issuer.audience")
    );

    let no_issuer = AuthConfig {
        issuer: String::new(),
        ..config()
    };
    assert_eq!(config_error_key(&no_issuer), Some("auth.issuer"));

    // The valid shapes: full config, dev mode, exactly 32 bytes.
    assert_eq!(config_error_key(&config()), None);
    assert_eq!(config_error_key(&AuthConfig::default()), None);
    assert_eq!(
        config_error_key(&AuthConfig {
            hs256_secret: "x".repeat(32),
            ..config()
        }),
        None
    );
}

#[test]
fn config_deserialises_from_toml_with_defaults() {
    let cfg: AuthConfig = toml::from_str("hs256_secret = \"\"").unwrap();
    assert_eq!(cfg, AuthConfig::default());
    assert_eq!(cfg.issuer, "stovepipe");
    assert!(!cfg.anonymous_read);

    let cfg: AuthConfig = toml::from_str(&format!(
        "anonymous_read = true\n[machine_issuer]\nissuer = \"{MACHINE}\"\naudience = \"{AUDIENCE}\"\npublic_key_pem = '''\n{TEST_MACHINE_PUBLIC_PEM}'''\n"
    ))
    .unwrap();
    let machine = cfg.machine_issuer.as_ref().unwrap();
    assert_eq!(machine.scope_claim, "scope");
    assert!(cfg.anonymous_read);
    Authenticator::new(&AuthConfig {
        hs256_secret: SECRET.to_owned(),
        ..cfg
    })
    .unwrap();

    assert!(toml::from_str::<AuthConfig>("hs256_secrett = \"x\"").is_err());
    assert!(
        toml::from_str::<AuthConfig>(
            "[machine_issuer]\nissuer = \"a\"\naudience = \"b\"\npublic_key_pem = \"c\"\nextra = 1"
        )
        .is_err()
    );
}

#[test]
fn mint_token_round_trips() {
    let a = authenticator();
    let token = mint_token(
        SECRET,
        PRIMARY,
        "ci-bot",
        &[Scope::Ingest, Scope::BuildsReport, Scope::Ingest],
        Duration::from_hours(1),
        NOW,
    )
    .unwrap();
    let p = auth_with(&a, &token, Scope::BuildsReport).unwrap();
    assert_eq!(p.id, "ci-bot");
    assert_eq!(
        p.scopes,
        BTreeSet::from([Scope::Ingest, Scope::BuildsReport])
    );
    // exp = now + ttl, honoured (with leeway) against the injected clock.
    a.authenticate(Some(&bearer(&token)), Scope::Ingest, NOW + 3600 + 29)
        .unwrap();
    assert_401(a.authenticate(Some(&bearer(&token)), Scope::Ingest, NOW + 3600 + 30));

    assert_eq!(
        mint_token("short", PRIMARY, "x", &[], Duration::from_secs(1), NOW)
            .unwrap_err()
            .key(),
        Some("auth.hs256_secret")
    );
    assert_eq!(
        mint_token("", PRIMARY, "x", &[], Duration::from_secs(1), NOW)
            .unwrap_err()
            .key(),
        Some("auth.hs256_secret")
    );
    assert!(mint_token(SECRET, PRIMARY, "", &[], Duration::from_secs(1), NOW).is_err());
}
