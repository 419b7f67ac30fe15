//! Who a certificate names: a role, a DC and a name, carried in a SAN URI `tidal://<role>/<dc>/<name>`.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The scheme and separator every identity URI starts with.
const PREFIX: &str = "tidal://";

/// Bytes a URI segment carries as they are; every other byte is written `%XX`
/// (upper-case hex). DC and agent names may hold `:` and `/`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// What a certificate's holder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A member of a DC's Raft group; its name is its node id. Its certificate
    /// serves (ServerAuth) and dials other servers (ClientAuth).
    Server,
    /// An agent of one DC; its certificate only dials (ClientAuth).
    Agent,
    /// A user or an operator's tool; its certificate only dials (ClientAuth).
    Client,
}

impl Role {
    /// The name the URI and the command line use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::Client => "client",
        }
    }

    /// The role with its article, for messages ("an agent").
    fn a(self) -> &'static str {
        match self {
            Role::Server => "a server",
            Role::Agent => "an agent",
            Role::Client => "a client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Role, IdentityError> {
        match s {
            "server" => Ok(Role::Server),
            "agent" => Ok(Role::Agent),
            "client" => Ok(Role::Client),
            _ => Err(IdentityError(format!(
                "unknown role {s:?}: expected server, agent or client"
            ))),
        }
    }
}

/// Why a name, a URI or a certificate does not make an identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub(crate) String);

/// The identity a certificate proves. Invariants (checked by every
/// constructor): the name is not empty; servers and agents name a DC; a
/// server's name is its node id (a decimal number, 1 or more).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    role: Role,
    dc: Option<String>,
    name: String,
}

impl CertIdentity {
    /// An identity; `dc` None (or empty) means any DC, which only clients may say.
    pub fn new(role: Role, dc: Option<&str>, name: &str) -> Result<CertIdentity, IdentityError> {
        let dc = dc.filter(|d| !d.is_empty()).map(str::to_string);
        if name.is_empty() {
            return Err(IdentityError(format!(
                "{} certificate needs a name",
                role.a()
            )));
        }
        if role != Role::Client && dc.is_none() {
            return Err(IdentityError(format!(
                "{} certificate needs a DC (--dc)",
                role.a()
            )));
        }
        if role == Role::Server && node_id(name).is_none() {
            return Err(IdentityError(format!(
                "a server certificate's name is its node id (1 or more), not {name:?}"
            )));
        }
        Ok(CertIdentity {
            role,
            dc,
            name: name.to_string(),
        })
    }

    /// Server `node_id` of `dc`.
    pub fn server(dc: &str, node_id: u64) -> Result<CertIdentity, IdentityError> {
        CertIdentity::new(Role::Server, Some(dc), &node_id.to_string())
    }

    /// What the holder is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The DC, or None for a client of any DC.
    pub fn dc(&self) -> Option<&str> {
        self.dc.as_deref()
    }

    /// The holder's name (a server's node id, in decimal).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A server's node id (None for agents and clients).
    pub fn node_id(&self) -> Option<u64> {
        match self.role {
            Role::Server => node_id(&self.name),
            Role::Agent | Role::Client => None,
        }
    }

    /// `tidal://<role>/<dc>/<name>`, each segment percent-encoded; an empty
    /// DC segment means any DC.
    pub fn to_uri(&self) -> String {
        let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
        format!(
            "{PREFIX}{}/{}/{}",
            self.role,
            enc(self.dc.as_deref().unwrap_or("")),
            enc(&self.name)
        )
    }

    /// The inverse of [`to_uri`](Self::to_uri). Only the canonical encoding
    /// is accepted (upper-case hex, nothing encoded that need not be), so an
    /// identity has exactly one URI.
    pub fn from_uri(uri: &str) -> Result<CertIdentity, IdentityError> {
        let bad = |why: &str| IdentityError(format!("bad identity URI {uri:?}: {why}"));
        let rest = uri
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with tidal://"))?;
        let mut parts = rest.split('/');
        let (Some(role), Some(dc), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected tidal://<role>/<dc>/<name>"));
        };
        let role: Role = role.parse().map_err(|e: IdentityError| bad(&e.0))?;
        let dec = |seg: &str| -> Result<String, IdentityError> {
            let s = percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| bad("a segment is not UTF-8 once decoded"))?;
            if utf8_percent_encode(&s, SEGMENT).to_string() != seg {
                return Err(bad("a segment is not canonically percent-encoded"));
            }
            Ok(s.into_owned())
        };
        let (dc, name) = (dec(dc)?, dec(name)?);
        CertIdentity::new(role, Some(&dc), &name).map_err(|e| bad(&e.0))
    }

    /// The identity in a DER certificate: its one `tidal://` SAN URI.
    /// It does not verify the certificate: callers read identities only of
    /// certificates already verified against the CA.
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError(format!("cannot parse the certificate: {e}")))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError(format!("bad subjectAltName extension: {e}")))?;
        let mut uris = sans
            .iter()
            .flat_map(|s| &s.value.general_names)
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) if u.starts_with(PREFIX) => Some(*u),
                _ => None,
            });
        match (uris.next(), uris.next()) {
            (Some(uri), None) => CertIdentity::from_uri(uri),
            (None, _) => Err(IdentityError(
                "the certificate names no tidal identity (a SAN URI tidal://<role>/<dc>/<name>; \
                 tidal cert issue writes one)"
                    .into(),
            )),
            (Some(_), Some(_)) => Err(IdentityError(
                "the certificate names more than one tidal identity".into(),
            )),
        }
    }
}

impl fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dc {
            Some(dc) => write!(f, "{} '{}' of dc '{dc}'", self.role, self.name),
            None => write!(f, "{} '{}' of any dc", self.role, self.name),
        }
    }
}

/// A node id as written in a server's name: decimal, 1 or more, canonical
/// (no sign, no leading zero).
fn node_id(name: &str) -> Option<u64> {
    let id: u64 = name.parse().ok()?;
    (id > 0 && id.to_string() == name).then_some(id)
}

/// Which servers a client accepts: the identity its server's certificate
/// must name, checked instead of a host name (addresses may be proxies,
/// network namespaces or 127.0.0.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// Exactly this node of this DC.
    #[allow(missing_docs)]
    Node { dc: String, id: u64 },
    /// Any server of this DC.
    Dc(String),
    /// Any server the CA vouches for.
    AnyServer,
}

impl Expect {
    /// Ok if `id` is a server this expectation accepts.
    pub fn check(&self, id: &CertIdentity) -> Result<(), IdentityError> {
        let wanted = match self {
            Expect::AnyServer => "a server".to_string(),
            Expect::Dc(dc) => format!("a server of dc '{dc}'"),
            Expect::Node { dc, id } => format!("server '{id}' of dc '{dc}'"),
        };
        let fits = id.role == Role::Server
            && match self {
                Expect::AnyServer => true,
                Expect::Dc(dc) => id.dc() == Some(dc),
                Expect::Node { dc, id: node } => id.dc() == Some(dc) && id.node_id() == Some(*node),
            };
        if fits {
            Ok(())
        } else {
            Err(IdentityError(format!(
                "the server's certificate names {id}, not {wanted}"
            )))
        }
    }
}

#[cfg(test)]
#[path = "identity_test.rs"]
mod tests;
