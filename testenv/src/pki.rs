//! Key material for a throwaway control plane: a CA, the API server's serving certificate and the
//! service-account signing key. Generated fresh for every `up`, so nothing secret outlives the
//! environment and no two environments trust each other.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where each generated file lives, as the control-plane flags need them.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_cert_pem: String,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_private_key: PathBuf,
    pub sa_public_key: PathBuf,
}

/// Names the API server answers to: loopback for the host, the first service IP and the in-cluster
/// DNS names for anything that reaches it the way a pod would.
const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

pub fn generate(dir: &Path) -> Result<Pki> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bgslot-testenv-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving_params = CertificateParams::new(
        SERVING_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_cert_pem: ca_cert.pem(),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_private_key: dir.join("sa.key"),
        sa_public_key: dir.join("sa.pub"),
    };
    write(&pki.ca_cert, &pki.ca_cert_pem)?;
    write(&pki.serving_cert, &serving_cert.pem())?;
    write(&pki.serving_key, &serving_key.serialize_pem())?;
    write(&pki.sa_private_key, &sa_key.serialize_pem())?;
    write(&pki.sa_public_key, &sa_key.public_key_pem())?;
    Ok(pki)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
