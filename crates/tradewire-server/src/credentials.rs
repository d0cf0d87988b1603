//! Authentication: Argon2id password hashes and HS256 JWTs with a pinned algorithm and an
//! enforced `exp`.

use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};

use crate::clock::now_ms;

/// What a token says (the claims are part of the protocol crate).
pub use tradewire_protocol::TokenClaims as Claims;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(secret: &SecretString, ttl_secs: u64) -> Self {
        let key = secret.expose_secret().as_bytes();
        // Only HS256 is accepted; `alg: none` and every other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl_secs: ttl_secs as i64,
        }
    }

    /// A token for `user_id` valid for the configured lifetime (or `ttl_secs` when given).
    pub fn issue(&self, user_id: &str, name: &str, ttl_secs: Option<i64>) -> (String, Claims) {
        let iat = now_ms() / 1000;
        let claims = Claims {
            sub: user_id.into(),
            name: name.into(),
            exp: iat + ttl_secs.unwrap_or(self.ttl_secs),
            iat,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, claims)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        // The library compares whole seconds (`exp < now`); a token is refused from the
        // millisecond of its `exp` on, the moment a WebSocket using it is closed with 4009.
        if claims.expires_at_ms() <= now_ms() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// An Argon2id hash in PHC string form.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Checks login passwords. A login that names an unknown user is checked against a dummy
/// hash, so both take equally long and the answer does not tell which users exist.
///
/// Argon2 is deliberately expensive (19 MiB and tens of milliseconds a check): checks run
/// on the blocking pool, at most one per core at a time, so a burst of logins queues here
/// instead of taking every core and blocking thread from the database reads.
#[derive(Debug)]
pub struct Passwords {
    dummy_hash: String,
    running: tokio::sync::Semaphore,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            dummy_hash: hash_password(&format!("{:x}", rand::random::<u128>())),
            running: tokio::sync::Semaphore::new(cores),
        }
    }

    /// [`Passwords::verify`] off the async runtime, at most one check per core at a time.
    pub async fn check(self: &std::sync::Arc<Self>, hash: Option<String>, password: String) -> bool {
        let Ok(_permit) = self.running.acquire().await else { return false };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.verify(hash.as_deref(), &password)).await.unwrap_or(false)
    }

    /// Does `password` match `hash` (the user's, or `None` for an unknown user)? Slow by
    /// design: run it off the async runtime.
    pub fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        match hash {
            Some(hash) => verify_password(hash, password),
            None => {
                let _ = verify_password(&self.dummy_hash, password);
                false
            }
        }
    }
}

/// Why the token secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "cannot read {path}: {source} (it is never replaced silently: every token would die; fix its permissions, or remove it to generate a new one)"
    )]
    Read { path: String, source: std::io::Error },
    #[error("{path} is empty (remove it to generate a new one, which ends every session)")]
    Empty { path: String },
    #[error("cannot create {path}: {source}")]
    Create { path: String, source: std::io::Error },
}

/// The configured secret, or the one kept in `data_dir/jwt.secret`, so `tradewire token`
/// and a restarted server agree with the running one. Created once (mode 0600, atomically);
/// a secret file that exists but cannot be read is an error, never a reason to make a new
/// one.
pub fn load_or_create_secret(
    configured: Option<&SecretString>,
    data_dir: &Path,
) -> Result<SecretString, SecretError> {
    if let Some(s) = configured {
        return Ok(s.clone());
    }
    let path = data_dir.join("jwt.secret");
    let shown = path.display().to_string();
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Err(SecretError::Empty { path: shown.clone() }),
        Ok(s) => Ok(Some(SecretString::from(s.trim().to_owned()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Read { path: shown.clone(), source }),
    };
    if let Some(secret) = read(&path)? {
        crate::private_files::tighten(&path, 0o600)
            .map_err(|source| SecretError::Read { path: shown.clone(), source })?;
        return Ok(secret);
    }
    let create = |source| SecretError::Create { path: shown.clone(), source };
    crate::private_files::private_dir(data_dir).map_err(create)?;
    let secret: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    crate::private_files::create_new(&path, secret.as_bytes()).map_err(create)?;
    // Whoever created it first, this is the secret now.
    read(&path)?.ok_or_else(|| SecretError::Empty { path: shown.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&SecretString::from("test-secret".to_owned()), 60)
    }

    #[test]
    fn issued_tokens_verify() {
        let t = tokens();
        let (token, claims) = t.issue("u1", "alice", None);
        assert_eq!(t.verify(&token), Ok(claims));
    }

    #[test]
    fn expired_tampered_foreign_and_unsigned_tokens_are_refused() {
        let t = tokens();
        let (expired, _) = t.issue("u1", "alice", Some(-10));
        assert_eq!(t.verify(&expired), Err(TokenError::Expired));

        let (token, _) = t.issue("u1", "alice", None);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_payload = base64_url(r#"{"sub":"u2","name":"bob","exp":9999999999,"iat":0}"#);
        parts[1] = &forged_payload;
        assert_eq!(t.verify(&parts.join(".")), Err(TokenError::Invalid));

        let other = Tokens::new(&SecretString::from("other".to_owned()), 60);
        assert_eq!(t.verify(&other.issue("u1", "alice", None).0), Err(TokenError::Invalid));

        let none = format!("{}.{}.", base64_url(r#"{"alg":"none","typ":"JWT"}"#), forged_payload);
        assert_eq!(t.verify(&none), Err(TokenError::Invalid));
        assert_eq!(t.verify("not a token"), Err(TokenError::Invalid));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("pw");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "pw"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("garbage", "pw"));
    }

    fn base64_url(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
