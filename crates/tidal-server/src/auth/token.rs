//! Tokens' text, `tdl_<id>_<secret>`: generating, parsing, hashing and checking one, and the `Bearer` header and TTLs that carry them.
//!
//! A token is `tdl_` + its id (8 random bytes as 16 lowercase hex digits,
//! public: what `token list` shows and `token revoke` takes) + `_` + its
//! secret (32 random bytes from the system's CSPRNG, base64url without
//! padding: 43 characters, which may contain `_`). The replicated state
//! keeps only the SHA-256 of the secret ([`Token::hash`]).
//!
//! Why SHA-256 and not a slow password hash: the secret has 256 bits of
//! entropy, so a preimage of its hash is out of reach however fast the hash
//! is, while a deliberately slow hash would cost every request milliseconds
//! of CPU and let junk tokens burn it.
//!
//! The secret is never printed: [`Secret`] has no `Debug` or `Display`, and
//! [`Token`]'s `Debug` shows the id only. [`Token::reveal`] gives the whole
//! text, once, to whoever is handed the new token.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// What every token starts with.
pub const PREFIX: &str = "tdl";
/// Random bytes in a token's id.
pub const ID_BYTES: usize = 8;
/// Random bytes in a token's secret.
pub const SECRET_BYTES: usize = 32;
/// The longest TTL [`parse_ttl`] takes: ten years.
pub const MAX_TTL_MS: u64 = 10 * 366 * DAY_MS;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Why a token, a header or a TTL was not taken. Its text never contains a
/// secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not `tdl_<16 hex>_<43 base64url>`; says which part is wrong.
    Malformed(&'static str),
    /// An `authorization` header that is not `Bearer <token>`.
    NotBearer,
    /// A TTL that is not a positive number with a unit (s, m, h, d).
    BadTtl(String),
    /// The system's random source failed.
    Random,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(
                f,
                "not a tidal token ({why}; a token is tdl_<16 hex digits>_<43 base64url characters>)"
            ),
            TokenError::NotBearer => {
                write!(f, "the authorization header is not \"Bearer <token>\"")
            }
            TokenError::BadTtl(ttl) => write!(
                f,
                "TTL {ttl:?} is not a positive number with a unit s, m, h or d (e.g. 30d), \
                 of at most 3660d"
            ),
            TokenError::Random => write!(f, "the system's random source failed"),
        }
    }
}

impl std::error::Error for TokenError {}

/// A token's secret part. It has no `Debug` or `Display`, and is not `Clone`:
/// it goes from where it was read to [`Token::hash`] and [`Token::verify`].
pub struct Secret([u8; SECRET_BYTES]);

/// A token: its public id and its secret.
pub struct Token {
    id: String,
    secret: Secret,
}

/// Shows the id only.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// A new token from the system's random source.
    pub fn generate() -> Result<Token, TokenError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill(&mut id).map_err(|_| TokenError::Random)?;
        rng.fill(&mut secret).map_err(|_| TokenError::Random)?;
        Ok(Token {
            id: hex(&id),
            secret: Secret(secret),
        })
    }

    /// Reads `tdl_<id>_<secret>` (surrounding whitespace, as a file's last
    /// newline, is ignored).
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let mut parts = text.trim().splitn(3, '_');
        let (prefix, id, secret) = (parts.next(), parts.next(), parts.next());
        if prefix != Some(PREFIX) {
            return Err(TokenError::Malformed("it does not start with tdl_"));
        }
        let id = id.ok_or(TokenError::Malformed("no id"))?;
        if !is_id(id) {
            return Err(TokenError::Malformed(
                "the id is not 16 lowercase hex digits",
            ));
        }
        let secret = secret.ok_or(TokenError::Malformed("no secret"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| TokenError::Malformed("the secret is not base64url"))?;
        let secret: [u8; SECRET_BYTES] = bytes
            .try_into()
            .map_err(|_| TokenError::Malformed("the secret is not 32 bytes"))?;
        Ok(Token {
            id: id.to_string(),
            secret: Secret(secret),
        })
    }

    /// The public id: what the state keys the token's record by.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// SHA-256 of the secret: what the state stores.
    pub fn hash(&self) -> [u8; 32] {
        let d = digest::digest(&digest::SHA256, &self.secret.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// Whether the secret hashes to `stored`, compared in constant time.
    pub fn verify(&self, stored: &[u8; 32]) -> bool {
        constant_time_eq(&self.hash(), stored)
    }

    /// The whole text, `tdl_<id>_<secret>`: for handing the token to its
    /// owner once, never for a log.
    pub fn reveal(&self) -> String {
        format!(
            "{PREFIX}_{}_{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret.0)
        )
    }
}

/// Whether `id` has the shape of a token id: 16 lowercase hex digits.
pub fn is_id(id: &str) -> bool {
    id.len() == 2 * ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The token of an `authorization` header's value: `Bearer <token>` (the
/// scheme in any case).
pub fn parse_bearer(header: &str) -> Result<Token, TokenError> {
    let (scheme, rest) = header.trim().split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::NotBearer);
    }
    Token::parse(rest)
}

/// A TTL such as `90s`, `15m`, `12h` or `30d`, in milliseconds: a positive
/// whole number and one unit, at most [`MAX_TTL_MS`].
pub fn parse_ttl(text: &str) -> Result<u64, TokenError> {
    let bad = || TokenError::BadTtl(text.to_string());
    let t = text.trim();
    // The unit is the last character, which may be more than one byte.
    let cut = t.char_indices().last().map_or(0, |(i, _)| i);
    let (digits, unit) = t.split_at(cut);
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 3600 * 1000,
        "d" => DAY_MS,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 && ms <= MAX_TTL_MS => Ok(ms),
        _ => Err(bad()),
    }
}

/// `a == b`, taking the same time wherever they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[path = "token_test.rs"]
mod tests;
