//! Test certificates (generated per test with rcgen; no key is ever committed) and
//! connection options for secured brokers.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use client::{ClientTls, ConnectOptions, Connection, Credentials};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the PEM files of certificates it signed, in one folder.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("FerroMQ test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Self {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        };
        std::fs::write(pki.ca_path(name), pki.ca.pem()).unwrap();
        pki
    }

    pub fn ca_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-ca.pem"))
    }

    /// Signs a certificate for `names` with `purpose`; writes `<file>.pem` and `<file>.key`.
    fn issue(
        &self,
        file: &str,
        names: &[&str],
        purpose: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, file: &str) -> (PathBuf, PathBuf) {
        self.issue(
            file,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, file: &str) -> (PathBuf, PathBuf) {
        self.issue(file, &["test-client"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Options that give up fast: a refused connection is an expected outcome here.
pub fn options(tls: Option<ClientTls>, credentials: Option<Credentials>) -> ConnectOptions {
    ConnectOptions {
        tls,
        credentials,
        connect_timeout: Duration::from_millis(500),
        ..ConnectOptions::default()
    }
}

pub fn trusting(ca: &Path) -> ClientTls {
    ClientTls::with_ca_file(ca, None).unwrap()
}

pub async fn connect(
    addr: &str,
    tls: Option<ClientTls>,
    credentials: Option<Credentials>,
) -> client::Result<Connection> {
    Connection::connect(addr, options(tls, credentials)).await
}
