//! Forged, expired and under-scoped tokens through the real HTTP server:
//! 401/403, and nothing changes.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{SECRET, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use stovepipe_server::auth::Scope;

// TEST-ONLY Ed25519 key pair (the same one tests/auth.rs uses). It protects
// nothing; never use it outside tests.
const MACHINE_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFtJyBia0/dPfb0YvDCNykdVAx3U8gmGkzZFDXBuxiO6
-----END PRIVATE KEY-----
";
const MACHINE_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAuN/0zsW+ZEfZqp6MWnuyb3A1ZQl+M3cTt+7Xg6KdVBQ=
-----END PUBLIC KEY-----
";
const MACHINE: &str = "https://ci.example.com";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn machine_claims(aud: &str) -> Value {
    json!({ "iss": MACHINE, "sub": "repo:org/svc:ref:main", "aud": aud, "iat": now(), "exp": now() + 600, "scope": "ingest" })
}

fn primary_claims() -> Value {
    json!({ "iss": "stovepipe", "sub": "alice", "iat": now(), "exp": now() + 600, "scope": "ingest" })
}

async fn start() -> Server {
    Server::start(&format!(
        "[queue.build]\nrunner = \"command\"\ncommand = \"sh ci.sh\"\n\n[auth.machine_issuer]\nissuer = \"{MACHINE}\"\naudience = \"stovepipe\"\npublic_key_pem = \"\"\"\n{MACHINE_PUBLIC_PEM}\"\"\"\n"
    ))
    .await
}

async fn ingest_with(server: &Server, token: &str) -> u16 {
    server
        .http
        .post(server.url("/v1/queues/team%2Fsvc/ingest"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn forged_expired_and_underscoped_tokens_change_nothing() {
    let server = start().await;
    let machine_key = EncodingKey::from_ed_pem(MACHINE_PRIVATE_PEM.as_bytes()).unwrap();

    let alg_none = {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
        let claims = URL_SAFE_NO_PAD.encode(primary_claims().to_string());
        format!("{header}.{claims}.")
    };
    // The classic confusion: HS256 "signed" with the machine issuer's public
    // key as the HMAC secret.
    let hs256_with_public_key = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(MACHINE_PUBLIC_PEM.as_bytes()),
        &machine_claims("stovepipe"),
    );
    let expired = {
        let mut c = primary_claims();
        c["iat"] = json!(now() - 7200);
        c["exp"] = json!(now() - 3600);
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &c,
        )
    };
    let missing_sub = {
        let mut c = primary_claims();
        c.as_object_mut().unwrap().remove("sub");
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &c,
        )
    };
    let wrong_audience = sign(
        Algorithm::EdDSA,
        &machine_key,
        &machine_claims("someone-else"),
    );
    let wrong_secret = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-000"),
        &primary_claims(),
    );

    for (what, token) in [
        ("alg: none", alg_none),
        (
            "HS256 keyed with the EdDSA public key",
            hs256_with_public_key,
        ),
        ("expired", expired),
        ("missing sub", missing_sub),
        ("wrong audience", wrong_audience),
        ("wrong secret", wrong_secret),
    ] {
        assert_eq!(ingest_with(&server, &token).await, 401, "{what}");
    }
    let read_only = Server::token(&[Scope::Read]);
    assert_eq!(ingest_with(&server, &read_only).await, 403, "missing scope");

    let requests = server.get_json("/v1/queues/team%2Fsvc/requests").await;
    assert_eq!(
        requests["items"].as_array().unwrap().len(),
        0,
        "nothing was ingested"
    );

    // The positive controls: the same server accepts well-formed tokens of
    // both issuers.
    let machine = sign(Algorithm::EdDSA, &machine_key, &machine_claims("stovepipe"));
    assert_eq!(
        ingest_with(&server, &machine).await,
        201,
        "a valid machine token"
    );
    assert_eq!(
        ingest_with(&server, &Server::token(&[Scope::Ingest])).await,
        200,
        "a valid primary token (deduplicated)"
    );
    server.stop().await;
}
