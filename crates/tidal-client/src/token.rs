//! The token a client presents, `authorization: Bearer <token>` on every request; its text never shows in `Debug` output or logs.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::Error;

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// A token (`tdl_<id>_<secret>`, from `tidal token create`), held as the
/// header value it is sent as. `Debug` shows its id only; there is no
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    header: MetadataValue<Ascii>,
    id: Option<String>,
}

impl Token {
    /// The token of `text` (surrounding whitespace, as a file's last
    /// newline, is ignored). Its shape is the server's to judge: a text that
    /// is not a token is sent as it is and refused there. Only an empty text
    /// or one with characters other than visible ASCII is an error here.
    pub fn new(text: &str) -> Result<Token, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::invalid_argument("the token is empty"));
        }
        let unfit = || {
            Error::invalid_argument(
                "the token has characters other than visible ASCII (a token is \
                 tdl_<16 hex digits>_<43 base64url characters>)",
            )
        };
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(unfit());
        }
        let mut header: MetadataValue<Ascii> =
            format!("Bearer {text}").parse().map_err(|_| unfit())?;
        header.set_sensitive(true);
        let mut parts = text.splitn(3, '_');
        let id = match (parts.next(), parts.next(), parts.next()) {
            (Some("tdl"), Some(id), Some(_)) => Some(id.to_string()),
            _ => None,
        };
        Ok(Token { header, id })
    }

    /// The token's public id (what `tidal token list` shows), if the text
    /// has a token's shape.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Shows the id only.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id.as_deref().unwrap_or("?"))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Puts the token, if any, on every request of a channel.
#[derive(Clone, Default)]
pub(crate) struct Bearer(pub(crate) Option<Token>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert(AUTHORIZATION, t.header.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tdl_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn debug_shows_the_id_and_never_the_secret() {
        let t = Token::new(&format!("{TOKEN}\n")).unwrap();
        assert_eq!(t.id(), Some("0123456789abcdef"));
        let shown = format!("{t:?}");
        assert!(shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("AAAA"), "{shown}");
        let junk = Token::new("not-a-token").unwrap();
        assert_eq!(junk.id(), None);
        assert!(!format!("{junk:?}").contains("not-a-token"));
    }

    #[test]
    fn every_request_carries_the_bearer_header() {
        let mut with = Bearer(Some(Token::new(TOKEN).unwrap()));
        let req = with.call(Request::new(())).unwrap();
        let header = req.metadata().get(AUTHORIZATION).unwrap();
        assert_eq!(header.to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert!(header.is_sensitive());
        let req = Bearer(None).call(Request::new(())).unwrap();
        assert!(req.metadata().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn an_empty_token_or_one_no_header_carries_is_refused() {
        assert!(Token::new("  \n").is_err());
        assert!(Token::new("tdl_\u{e9}").is_err());
        assert!(Token::new("a\nb").is_err());
        assert!(Token::new("tdl_a b").is_err());
    }
}
