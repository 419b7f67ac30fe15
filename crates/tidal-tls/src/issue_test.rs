//! Issuing into directories and loading them back: identities, wrong CAs, key usages, expiry, files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::files::TlsDir;
use crate::info::CertInfo;

const DAY: Duration = Duration::from_secs(86_400);

fn ca(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    new_ca(&dir, name, Validity::days(30)).expect("a new CA");
    dir
}

fn request(role: Role, dc: Option<&str>, name: &str) -> Request {
    Request {
        identity: CertIdentity::new(role, dc, name).unwrap(),
        hosts: Vec::new(),
        validity: Validity::days(10),
    }
}

fn leaf(dir: &Path) -> CertInfo {
    let pem = std::fs::read(dir.join(CERT_FILE)).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let der: rustls::pki_types::CertificateDer = der;
    CertInfo::from_der(&der).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn issued_certificates_load_with_their_identity_and_key_usages() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca(tmp.path(), "ca");
    assert_eq!(mode(&ca.join(CA_KEY_FILE)), 0o600);
    for (role, dc, name, server_auth) in [
        (Role::Server, Some("dc1"), "3", true),
        (Role::Agent, Some("dc1"), "gpu:7/a", false),
        (Role::Client, None, "alice", false),
    ] {
        let out = tmp.path().join(format!("{role}"));
        let req = request(role, dc, name);
        let issued = issue(&ca, &req, &out).unwrap();
        assert_eq!(issued.identity(), &req.identity);
        assert_eq!(mode(&out.join(KEY_FILE)), 0o600);
        assert_eq!(
            std::fs::read(out.join(CA_FILE)).unwrap(),
            std::fs::read(ca.join(CA_FILE)).unwrap()
        );
        let loaded = TlsDir::load(&out).unwrap();
        assert_eq!(loaded.identity(), &req.identity);
        assert_eq!(loaded.dir(), out);
        let info = leaf(&out);
        assert_eq!(info.identity.as_ref(), Ok(&req.identity));
        assert_eq!(
            (info.server_auth, info.client_auth),
            (server_auth, true),
            "{role}"
        );
        assert!(!info.is_ca);
        assert_eq!(info.subject, format!("CN={name}"));
        assert_eq!(info.issuer, "CN=ca");
        assert!(info
            .sans
            .contains(&format!("URI:{}", req.identity.to_uri())));
        let hosts = info.sans.iter().any(|s| s == "DNS:localhost")
            && info.sans.iter().any(|s| s == "IP:127.0.0.1");
        assert_eq!(hosts, role == Role::Server, "{role}: {:?}", info.sans);
        let left = info.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > 9 * DAY && left <= 10 * DAY, "{left:?}");
    }
}

#[test]
fn hosts_become_dns_and_ip_names() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca(tmp.path(), "ca");
    let mut req = request(Role::Server, Some("dc1"), "1");
    req.hosts = vec!["node1.example".into(), "10.0.0.5".into(), "::1".into()];
    issue(&ca, &req, &tmp.path().join("n1")).unwrap();
    let sans = leaf(&tmp.path().join("n1")).sans;
    assert_eq!(
        sans,
        [
            "URI:tidal://server/dc1/1",
            "DNS:node1.example",
            "IP:10.0.0.5",
            "IP:::1"
        ]
    );
    req.hosts = vec!["bad host é".into()];
    let e = issue(&ca, &req, &tmp.path().join("n2")).unwrap_err();
    assert!(e.to_string().contains("bad host"), "{e}");
}

#[test]
fn a_certificate_of_another_ca_does_not_load() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (ca(tmp.path(), "a"), ca(tmp.path(), "b"));
    let out = tmp.path().join("n1");
    issue(&a, &request(Role::Server, Some("dc1"), "1"), &out).unwrap();
    std::fs::copy(b.join(CA_FILE), out.join(CA_FILE)).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: is not signed by the CA of ca.pem (its issuer is CN=a)",
            out.join(CERT_FILE).display()
        )
    );
    // Both CAs in ca.pem (a rotation): it loads.
    let both = [a.join(CA_FILE), b.join(CA_FILE)].map(|p| std::fs::read_to_string(p).unwrap());
    std::fs::write(out.join(CA_FILE), both.concat()).unwrap();
    TlsDir::load(&out).unwrap();
}

#[test]
fn expired_and_future_certificates_do_not_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca(tmp.path(), "ca");
    let now = SystemTime::now();
    let mut req = request(Role::Agent, Some("dc1"), "a1");
    req.validity = Validity {
        not_before: now - 3 * DAY,
        not_after: now - DAY,
    };
    let out = tmp.path().join("old");
    issue(&ca, &req, &out).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(e.contains("cert.pem: expired at 20"), "{e}");
    TlsDir::load_at(&out, now - 2 * DAY).unwrap();

    req.validity = Validity {
        not_before: now + DAY,
        not_after: now + 3 * DAY,
    };
    let out = tmp.path().join("new");
    issue(&ca, &req, &out).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(e.contains("cert.pem: is not valid before 20"), "{e}");
}

#[test]
fn a_server_identity_needs_the_server_key_usage() {
    // A certificate whose URI says server but whose key usage allows only
    // client use (not something tidal cert issues) is refused at load.
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = ca(tmp.path(), "ca");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(ca_dir.join(CA_FILE)).unwrap(),
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join(CA_KEY_FILE)).unwrap())
            .unwrap(),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "tidal://server/dc1/1".to_string().try_into().unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let out = tmp.path().join("posing");
    std::fs::create_dir(&out).unwrap();
    std::fs::copy(ca_dir.join(CA_FILE), out.join(CA_FILE)).unwrap();
    std::fs::write(out.join(CERT_FILE), cert.pem()).unwrap();
    std::fs::write(out.join(KEY_FILE), key.serialize_pem()).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(e.contains("key usages do not fit its role (server)"), "{e}");
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca(tmp.path(), "ca");
    let out = tmp.path().join("c");
    issue(&ca, &request(Role::Client, None, "c"), &out).unwrap();
    let other = tmp.path().join("d");
    issue(&ca, &request(Role::Client, None, "d"), &other).unwrap();

    std::fs::copy(other.join(KEY_FILE), out.join(KEY_FILE)).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: is not the key of cert.pem",
            out.join(KEY_FILE).display()
        )
    );

    std::fs::write(out.join(KEY_FILE), "nothing").unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: holds no PEM private key",
            out.join(KEY_FILE).display()
        )),
        "{e}"
    );

    std::fs::copy(ca.join(CA_FILE), out.join(CERT_FILE)).unwrap();
    std::fs::copy(ca.join(CA_KEY_FILE), out.join(KEY_FILE)).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(
        e.contains("cert.pem: the certificate names no tidal identity"),
        "{e}"
    );

    std::fs::write(out.join(CA_FILE), "").unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(
        e.ends_with("ca.pem: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        "{e}"
    );

    std::fs::remove_file(out.join(CERT_FILE)).unwrap();
    let e = TlsDir::load(&out).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot read {}: ", out.join(CERT_FILE).display())),
        "{e}"
    );

    let e = issue(
        &tmp.path().join("nope"),
        &request(Role::Client, None, "x"),
        &tmp.path().join("x"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("cannot read ") && e.contains("nope/ca.pem"),
        "{e}"
    );
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = ca(tmp.path(), "ca");
    let before = std::fs::read(ca_dir.join(CA_KEY_FILE)).unwrap();
    let e = new_ca(&ca_dir, "again", Validity::days(1)).unwrap_err();
    assert!(matches!(e, TlsError::Exists { .. }), "{e}");
    assert_eq!(std::fs::read(ca_dir.join(CA_KEY_FILE)).unwrap(), before);

    let out = tmp.path().join("n");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join(KEY_FILE), "mine").unwrap();
    let e = issue(&ca_dir, &request(Role::Server, Some("d"), "1"), &out).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} exists; tidal cert does not overwrite files: remove it or choose another --out",
            out.join(KEY_FILE).display()
        )
    );
    assert_eq!(std::fs::read(out.join(KEY_FILE)).unwrap(), b"mine");
    assert!(!out.join(CERT_FILE).exists() && !out.join(CA_FILE).exists());
    // The CA's own directory holds ca.pem: issuing into it is refused too.
    assert!(issue(&ca_dir, &request(Role::Client, None, "c"), &ca_dir).is_err());
}
