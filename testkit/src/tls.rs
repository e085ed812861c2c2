//! Throwaway certificates for TLS servers: a certificate authority made for one test, a server
//! certificate it signs for `127.0.0.1` and `localhost`, and a second, unrelated authority that a
//! client can wrongly trust. Generated in process (rcgen), written as PEM files.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::fs;
use std::path::{Path, PathBuf};

/// The PEM files of one test's TLS setup, in one directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The authority that signed the server's certificate: what a client must trust.
    pub ca: PathBuf,
    /// The server's certificate, for `127.0.0.1` and `localhost`.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
    /// Another authority, which signed nothing the server has: trusting it must fail.
    pub wrong_ca: PathBuf,
}

impl TlsFiles {
    /// Generates the authorities and the server's certificate into `dir` (created if needed).
    pub fn generate(dir: &Path) -> TlsFiles {
        fs::create_dir_all(dir).expect("create the TLS directory");
        let (ca_pem, ca) = authority("redis-ratelimit test CA");
        let (wrong_pem, _) = authority("redis-ratelimit unrelated CA");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("the server's names");
        params
            .distinguished_name
            .push(DnType::CommonName, "redis-ratelimit test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &ca)
            .expect("sign the server certificate");
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            wrong_ca: dir.join("wrong-ca.pem"),
        };
        for (path, text) in [
            (&files.ca, ca_pem),
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
            (&files.wrong_ca, wrong_pem),
        ] {
            fs::write(path, text).expect("write a TLS file");
        }
        files
    }

    /// The server's options for these files, the listening ports aside: clients are not asked
    /// for a certificate.
    pub fn server_args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        vec![
            "--tls-cert-file".into(),
            path(&self.cert),
            "--tls-key-file".into(),
            path(&self.key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

/// A self-signed authority: its certificate's PEM, and what signs with it.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("a CA key");
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert.pem(), Issuer::new(params, key))
}

/// Whether a server's failed start says that it was built without TLS, rather than that the
/// certificates or options are wrong: Redis 6 without TLS does not know the `tls-*` options,
/// Redis 7.2+ and Valkey lack the `tls` connection type.
pub fn lacks_tls(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    [
        "bad directive or wrong number of arguments",
        "connection listener of tls",
        "tls is not supported",
        "tls support is not built",
        "not built with tls",
    ]
    .iter()
    .any(|pattern| log.contains(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_server_without_tls_from_a_bad_setup() {
        for log in [
            "*** FATAL CONFIG FILE ERROR (Redis 6.2.14) ***\n>>> 'tls-port \"6380\"'\nBad directive or wrong number of arguments",
            "Failed finding connection listener of tls",
        ] {
            assert!(lacks_tls(log), "{log}");
        }
        for log in [
            "Failed to load certificate: /tmp/x/server.pem: error:80000002:system library::No such file or directory",
            "Failed to configure TLS. Check logs for more info.",
        ] {
            assert!(!lacks_tls(log), "{log}");
        }
    }

    #[test]
    fn generates_pem_files() {
        let dir = std::env::temp_dir().join(format!("testkit-tls-{}", std::process::id()));
        let files = TlsFiles::generate(&dir);
        let read = |path: &Path| fs::read_to_string(path).unwrap();
        assert!(read(&files.ca).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(read(&files.cert).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(read(&files.key).starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(read(&files.ca), read(&files.wrong_ca));
        let _ = fs::remove_dir_all(&dir);
    }
}
